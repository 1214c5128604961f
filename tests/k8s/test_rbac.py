"""The chart's RBAC is enough, and no more: the provider runs as a ServiceAccount bound to exactly the worker's Role
of charts/endpointctl/templates/rbac.yaml through a full apply → ready → delete cycle, and the API's log reader
runs as one bound to exactly the API's Role (requests impersonate them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from common.logreader.kubernetes import KubernetesLogReader
from tests.k8s.conftest import CPU, desired
from worker.providers.base import ProviderTemporaryError
from worker.providers.kubernetes import KubernetesProvider
from worker.providers.kubernetes.manifests import RenderOptions

pytestmark = pytest.mark.k8s

RBAC = Path(__file__).resolve().parents[2] / "charts" / "endpointctl" / "templates" / "rbac.yaml"


def chart_role_rules(role: str = "provider") -> list[dict]:
    """The rules of the chart's Role named `<fullname>-<role>` (template lines dropped: the rules are literal)."""
    text = re.sub(r"\{\{-? /\*.*?\*/ -?\}\}", "", RBAC.read_text(), flags=re.S)
    for doc in text.split("\n---"):
        if re.search(r"^kind: Role$", doc, flags=re.M) and re.search(rf"^  name: .*-{role}$", doc, flags=re.M):
            literal = "\n".join(line for line in doc.splitlines() if "{{" not in line)
            return yaml.safe_load(literal)["rules"]
    raise AssertionError(f"no Role {role!r} in rbac.yaml")


def bind_chart_role(kube_api, ns: str, account: str, role: str) -> None:
    """A ServiceAccount in `ns` bound to exactly the chart's Role `role`."""
    core, rbac = k8s.CoreV1Api(kube_api), k8s.RbacAuthorizationV1Api(kube_api)
    core.create_namespaced_service_account(ns, {"metadata": {"name": account}})
    rbac.create_namespaced_role(ns, {"metadata": {"name": f"endpointctl-{role}"}, "rules": chart_role_rules(role)})
    rbac.create_namespaced_role_binding(ns, {
        "metadata": {"name": f"endpointctl-{role}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"endpointctl-{role}"},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}]})


def client_as(kube_cluster, ns: str, account: str) -> k8s.ApiClient:
    api = k8s_config.new_client_from_config(config_file=str(kube_cluster.kubeconfig))
    api.set_default_header("Impersonate-User", f"system:serviceaccount:{ns}:{account}")
    return api


def test_provider_works_with_only_the_documented_role(kube_cluster, kube_api, kube_namespace):
    ns = kube_namespace
    k8s.CoreV1Api(kube_api).create_namespace({"metadata": {"name": ns}})
    bind_chart_role(kube_api, ns, "endpointctl", "provider")
    api = client_as(kube_cluster, ns, "endpointctl")
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


def test_the_api_reads_logs_with_only_its_own_role(kube_cluster, kube_api, kube_namespace):
    """The API's ServiceAccount (chart Role `log-reader`: pods get/list, pods/log get) reads an endpoint's logs
    through the log reader, and can do nothing the worker does: no watch, no Secret, no write."""
    ns = kube_namespace
    k8s.CoreV1Api(kube_api).create_namespace({"metadata": {"name": ns}})
    bind_chart_role(kube_api, ns, "endpointctl", "provider")
    bind_chart_role(kube_api, ns, "endpointctl-api", "log-reader")
    assert {r for rule in chart_role_rules("log-reader") for r in rule["resources"]} == {"pods", "pods/log"}
    provider = KubernetesProvider(client_as(kube_cluster, ns, "endpointctl"),
                                  RenderOptions(namespace=ns, runtime_image="ghcr.io/endpointctl/runtime:test"))
    api = client_as(kube_cluster, ns, "endpointctl-api")
    try:
        provider.apply(desired("ep-21-logs", hardware=CPU))
        assert provider.wait_until(lambda: provider.observe("ep-21-logs").ready_replicas == 1, 90.0)
        reader = KubernetesLogReader(api, ns)
        pods = reader.pods("ep-21-logs")
        assert len(pods) == 1
        lines = list(reader.logs("ep-21-logs", tail=50))
        assert any("serving on 0.0.0.0" in line for line in lines), lines
        assert all(line.startswith(f"[{pods[0]['metadata']['name']}] ") for line in lines)
        assert reader.pods("ep-99-none") == []
        denied = [
            lambda: k8s.CoreV1Api(api).list_namespaced_pod(ns, watch=True, timeout_seconds=1,
                                                           _preload_content=False),
            lambda: k8s.CoreV1Api(api).list_namespaced_secret(ns),
            lambda: k8s.AppsV1Api(api).list_namespaced_deployment(ns),
            lambda: k8s.CoreV1Api(api).delete_namespaced_pod(pods[0]["metadata"]["name"], ns),
            lambda: k8s.CoreV1Api(api).list_namespaced_pod("default"),
        ]
        for call in denied:
            with pytest.raises(k8s.exceptions.ApiException) as refused:
                call()
            assert refused.value.status == 403
        provider.delete("ep-21-logs")
        assert provider.wait_until(lambda: not provider.observe("ep-21-logs").exists, 90.0)
    finally:
        provider.close()
        api.close()
