"""The Helm chart renders (real helm, built by scripts/build-kube.sh) and every object it renders passes the real
API server's server-side dry-run: schemas, RBAC objects, probes and security contexts all validate."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.dynamic import DynamicClient

from cli.devcluster.binaries import find_binaries

pytestmark = pytest.mark.k8s

CHART = Path(__file__).resolve().parents[2] / "charts" / "endpointctl"
TEST_SECRETS_KEY = "u0Pj8y9b0Jc4s3uYQ8m9Yw9Xv4n1h1Qm3YH0c2Yt0aM="  # a Fernet key (32 bytes, url-safe base64)


def helm_template(release_ns: str, endpoints_ns: str, *extra: str) -> list[dict]:
    helm = find_binaries(build=False).path("helm")
    out = subprocess.run(
        [str(helm), "template", "epc", str(CHART), "--namespace", release_ns,
         "--set", "database.url=postgresql://epc:pw@postgres:5432/epc", "--set", "adminToken.value=epc_test",
         "--set", "secretsKey.value=" + TEST_SECRETS_KEY,
         "--set", f"provider.endpointsNamespace={endpoints_ns}", *extra],
        capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.parametrize("extra", [
    (),
    ("--set", "provider.storageClass=fast-ssd", "--set", "provider.nodeCapacityAccess=false",
     "--set", "provider.hubTokenSecret=hub", "--set", "redis.existingSecret=redis-url",
     "--set-json", 'provider.tolerations=[{"key":"dedicated","operator":"Exists","effect":"NoSchedule"}]'),
])
def test_chart_objects_pass_server_side_dry_run(kube_api, extra):
    suffix = uuid.uuid4().hex[:8]
    release_ns, endpoints_ns = f"epc-{suffix}", f"epc-endpoints-{suffix}"
    docs = helm_template(release_ns, endpoints_ns, *extra)
    kinds = sorted({d["kind"] for d in docs})
    assert {"Deployment", "Service", "Role", "RoleBinding", "ServiceAccount", "Namespace", "Secret"} <= set(kinds)
    workers = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-worker")]
    env = {e["name"]: e.get("value") for e in workers[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ENDPOINTCTL_PROVIDER"] == "kubernetes" and env["ENDPOINTCTL_K8S_NAMESPACE"] == endpoints_ns

    core = k8s.CoreV1Api(kube_api)
    dyn = DynamicClient(kube_api)
    # Namespaces are really created (a dry-run object cannot hold others), everything else is dry-run only.
    for ns in (release_ns, endpoints_ns):
        core.create_namespace({"metadata": {"name": ns}})
    try:
        for doc in docs:
            if doc["kind"] == "Namespace":
                continue
            resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
            namespace = doc["metadata"].get("namespace", release_ns) if resource.namespaced else None
            resource.server_side_apply(body=doc, name=doc["metadata"]["name"], namespace=namespace,
                                       field_manager="helm-test", dry_run="All")
        assert core.list_namespaced_service_account(release_ns).items == [] or all(
            sa.metadata.name == "default" for sa in core.list_namespaced_service_account(release_ns).items)
    finally:
        for ns in (release_ns, endpoints_ns):
            core.delete_namespace(ns)


def test_chart_requires_a_shared_secrets_key() -> None:
    """Every API and worker pod must decrypt what the others wrote: no key, no render."""
    helm = find_binaries(build=False).path("helm")
    out = subprocess.run([str(helm), "template", "epc", str(CHART), "--set", "database.url=postgresql://x/y",
                          "--set", "adminToken.value=epc_test"], capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode != 0 and "secretsKey" in out.stderr
    docs = helm_template("epc-k", "epc-k-endpoints")
    api = [d for d in docs if d["kind"] == "Deployment" and not d["metadata"]["name"].endswith("-worker")][0]
    env = {e["name"]: e for e in api["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ENDPOINTCTL_SECRETS_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "secrets-key"
