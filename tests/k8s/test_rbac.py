"""The documented minimal RBAC role is enough: the provider runs as a ServiceAccount bound to exactly the rules of
charts/endpointctl/templates/rbac.yaml (requests impersonate it), through a full apply → ready → delete cycle."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.k8s.conftest import CPU, desired
from worker.providers.base import ProviderTemporaryError
from worker.providers.kubernetes import KubernetesProvider
from worker.providers.kubernetes.manifests import RenderOptions

pytestmark = pytest.mark.k8s

RBAC = Path(__file__).resolve().parents[2] / "charts" / "endpointctl" / "templates" / "rbac.yaml"


def chart_role_rules() -> list[dict]:
    """The Role's rules from the chart template (template lines dropped: the rules themselves are literal)."""
    text = re.sub(r"\{\{-? /\*.*?\*/ -?\}\}", "", RBAC.read_text(), flags=re.S)
    for doc in text.split("\n---"):
        if re.search(r"^kind: Role$", doc, flags=re.M):
            literal = "\n".join(line for line in doc.splitlines() if "{{" not in line)
            return yaml.safe_load(literal)["rules"]
    raise AssertionError("no Role in rbac.yaml")


def test_provider_works_with_only_the_documented_role(kube_cluster, kube_api, kube_namespace):
    core, rbac = k8s.CoreV1Api(kube_api), k8s.RbacAuthorizationV1Api(kube_api)
    ns = kube_namespace
    core.create_namespace({"metadata": {"name": ns}})
    core.create_namespaced_service_account(ns, {"metadata": {"name": "endpointctl"}})
    rbac.create_namespaced_role(ns, {"metadata": {"name": "endpointctl-provider"}, "rules": chart_role_rules()})
    rbac.create_namespaced_role_binding(ns, {
        "metadata": {"name": "endpointctl-provider"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "endpointctl-provider"},
        "subjects": [{"kind": "ServiceAccount", "name": "endpointctl", "namespace": ns}]})

    api = k8s_config.new_client_from_config(config_file=str(kube_cluster.kubeconfig))
    api.set_default_header("Impersonate-User", f"system:serviceaccount:{ns}:endpointctl")
    provider = KubernetesProvider(api, RenderOptions(namespace=ns, runtime_image="ghcr.io/endpointctl/runtime:test"))
    try:
        provider.apply(desired("ep-20-rbac", hardware=CPU))
        assert provider.wait_until(lambda: provider.observe("ep-20-rbac").ready_replicas == 1, 90.0)
        assert provider.list_keys() == ["ep-20-rbac"]
        # Node access is the optional ClusterRole, not granted here: a clear temporary error, not a crash.
        with pytest.raises(ProviderTemporaryError, match="nodes cache"):
            provider.nodes.start()
            provider._synced(provider.nodes)
        provider.delete("ep-20-rbac")
        assert provider.wait_until(lambda: not provider.observe("ep-20-rbac").exists, 90.0)
        # And nothing beyond the namespace: other namespaces are off limits.
        with pytest.raises(k8s.exceptions.ApiException) as denied:
            k8s.AppsV1Api(api).list_namespaced_deployment("default")
        assert denied.value.status == 403
    finally:
        provider.close()
