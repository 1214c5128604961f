"""The Helm chart renders (real helm, built by scripts/build-kube.sh) and every object it renders passes the real
API server's server-side dry-run: schemas, RBAC objects, probes and security contexts all validate. The scrape
token it generates reaches the API pod and the ServiceMonitor, and really reads /metrics of a real API process."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import httpx
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


def _api_env(docs: list[dict]) -> dict[str, dict]:
    api = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-api")][0]
    return {e["name"]: e for e in api["spec"]["template"]["spec"]["containers"][0]["env"]}


def _secret(docs: list[dict], name: str) -> dict | None:
    return next((d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == name), None)


def test_chart_scrape_token_reaches_the_api_and_prometheus(redis_server, tmp_path: Path) -> None:
    """The chart's scrape token, as its ServiceMonitor sends it, reads /metrics of an API started with the
    environment the chart gives the API pod; nothing else in the release gets it."""
    from tests.controlplane.conftest import start_live_server, stop_live_server

    docs = helm_template("epc-m", "epc-m-endpoints", "--set", "metrics.serviceMonitor.enabled=true",
                         "--set-json", 'metrics.serviceMonitor.labels={"release":"prometheus"}',
                         "--set", "controlplane.forwardedAllowIps=10.42.0.0/16")
    monitor = [d for d in docs if d["kind"] == "ServiceMonitor"][0]
    service = [d for d in docs if d["kind"] == "Service"][0]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    credentials = monitor["spec"]["endpoints"][0]["authorization"]["credentials"]
    env = _api_env(docs)
    assert env["ENDPOINTCTL_METRICS_TOKEN"]["valueFrom"]["secretKeyRef"] == credentials
    assert env["ENDPOINTCTL_FORWARDED_ALLOW_IPS"]["value"] == "10.42.0.0/16"
    workers = [d for d in docs if d["kind"] == "Deployment" and not d["metadata"]["name"].endswith("-api")]
    for worker in workers:
        names = {e["name"] for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert "ENDPOINTCTL_METRICS_TOKEN" not in names, worker["metadata"]["name"]
    token = _secret(docs, credentials["name"])["stringData"][credentials["key"]]

    redis_server.flush()
    pod_env = {"ENDPOINTCTL_METRICS_TOKEN": token,
               "ENDPOINTCTL_FORWARDED_ALLOW_IPS": env["ENDPOINTCTL_FORWARDED_ALLOW_IPS"]["value"]}
    server = start_live_server(database_url=f"sqlite:///{tmp_path / 'epc.db'}", data_dir=tmp_path / "api",
                               redis_url=redis_server.url, extra_env=pod_env)
    try:
        scraped = httpx.get(f"{server.url}/metrics", headers={"authorization": f"Bearer {token}"}, timeout=30)
        assert scraped.status_code == 200 and "endpointctl_api_requests_total" in scraped.text
        assert httpx.get(f"{server.url}/metrics", timeout=30).status_code == 401
    finally:
        stop_live_server(server)


def test_chart_scrape_token_choices() -> None:
    """Generated once per install (random, 16+ characters), or given, or from an existing Secret; too short is
    refused at render time rather than at the API's start."""
    first, second = (_secret(helm_template("epc-t", "epc-t-e"), "epc-endpointctl-metrics") for _ in range(2))
    generated = first["stringData"]["token"]
    assert len(generated) >= 16 and generated != second["stringData"]["token"]
    given = helm_template("epc-t", "epc-t-e", "--set", "metrics.token.value=scrape-me-please-0123")
    assert _secret(given, "epc-endpointctl-metrics")["stringData"]["token"] == "scrape-me-please-0123"
    existing = helm_template("epc-t", "epc-t-e", "--set", "metrics.token.existingSecret=prom-scrape",
                             "--set", "metrics.serviceMonitor.enabled=true")
    assert _secret(existing, "epc-endpointctl-metrics") is None
    assert _api_env(existing)["ENDPOINTCTL_METRICS_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "prom-scrape",
                                                                                            "key": "token"}
    monitor = [d for d in existing if d["kind"] == "ServiceMonitor"][0]
    assert monitor["spec"]["endpoints"][0]["authorization"]["credentials"]["name"] == "prom-scrape"
    helm = find_binaries(build=False).path("helm")
    short = subprocess.run([str(helm), "template", "epc", str(CHART), "--set", "database.url=postgresql://x/y",
                            "--set", "adminToken.value=epc_test", "--set", "secretsKey.value=" + TEST_SECRETS_KEY,
                            "--set", "metrics.token.value=short"], capture_output=True, text=True, timeout=120,
                           check=False)
    assert short.returncode != 0 and "at least 16 characters" in short.stderr
