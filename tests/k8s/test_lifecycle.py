"""The full lifecycle through the control-plane API and the Celery worker with ENDPOINTCTL_PROVIDER=kubernetes,
against the simulated cluster: create → running → update (rolling, new revision) → scale-to-zero → a request
through the gateway wakes it → pause → resume → delete (zero labelled objects left).

kwok pods serve nothing, so the wake-up asserts the scale-up and the held request's bounded outcome, not an
answer: the gateway holds the request until a replica is ready, then sends it to the pod's simulated IP, which
serves nothing, and the request comes back, unanswered by a runtime, within its hold timeout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from kubernetes import client as k8s

from cli.up import Stack
from tests.fixtures.processes import free_port, wait_until
from tests.k8s.test_provider import labelled_objects
from worker.providers.kubernetes.manifests import ANNOTATION_REVISION

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

ADMIN_TOKEN = "epc_k8s-lifecycle-admin-token-0123456789abcdefgh"


@pytest.fixture
def k8s_stack(tmp_path, kube_cluster, kube_namespace) -> Iterator[Stack]:
    env = {"ENDPOINTCTL_PROVIDER": "kubernetes", "KUBECONFIG": str(kube_cluster.kubeconfig),
           "ENDPOINTCTL_K8S_NAMESPACE": kube_namespace, "ENDPOINTCTL_K8S_RUNTIME_IMAGE": "ghcr.io/endpointctl/runtime:test",
           "ENDPOINTCTL_RESYNC_INTERVAL": "10", "ENDPOINTCTL_IDLE_CHECK_INTERVAL": "2",
           "ENDPOINTCTL_AUTOSCALE_INTERVAL": "2", "ENDPOINTCTL_CAPACITY_INTERVAL": "2"}
    stack = Stack(port=free_port(), data_dir=tmp_path / "data", admin_token=ADMIN_TOKEN, extra_env=env,
                  worker_concurrency=4)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
        # Shown by pytest only when the test failed: what the worker and the API said last.
        for name in ("worker.log", "api.log"):
            log = stack.data_dir / "logs" / name
            if log.exists():
                print(f"--- tail of {name} ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:]))


def test_full_lifecycle_through_the_api_and_the_worker(k8s_stack, kube_api, kube_namespace):
    http = httpx.Client(base_url=k8s_stack.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
    apps = k8s.AppsV1Api(kube_api)

    def get() -> dict:
        return http.get("/v2/endpoint/admin/llm").json()

    def state_is(state: str) -> dict | None:
        body = get()
        return body if body["status"]["state"] == state else None

    created = http.post("/v2/endpoint/admin", json={
        "name": "llm", "type": "protected", "provider": {"vendor": "aws", "region": "us-east-1"},
        "compute": {"accelerator": "gpu", "instanceType": "nvidia-l4", "instanceSize": "x1",
                    "scaling": {"minReplica": 0, "maxReplica": 1, "scaleToZeroTimeout": None}},
        "model": {"repository": "acme/tiny-llama", "framework": "pytorch", "task": "text-generation",
                  "image": {"huggingface": {}}, "env": {"MAX_TOTAL_TOKENS": "512"}},
    })
    assert created.status_code == 201, created.text
    body = wait_until(lambda: state_is("running"), timeout=120, what="running")
    assert body["status"]["readyReplica"] == 1
    dep = wait_until(lambda: apps.list_namespaced_deployment(kube_namespace).items, timeout=10, what="deployment")[0]
    key = dep.metadata.name
    assert dep.spec.template.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    assert dep.spec.template.spec.node_selector == {"nvidia.com/gpu.product": "NVIDIA-L4"}

    # Update: a new spec revision rolls out as a new ReplicaSet; the endpoint is running on it afterwards.
    updated = http.put("/v2/endpoint/admin/llm", json={"model": {
        "repository": "acme/tiny-llama", "framework": "pytorch", "task": "text-generation",
        "image": {"huggingface": {}}, "env": {"MAX_TOTAL_TOKENS": "1024"}}})
    assert updated.status_code == 200, updated.text
    wait_until(lambda: (d := apps.read_namespaced_deployment(key, kube_namespace)).metadata.annotations[
        ANNOTATION_REVISION] != dep.metadata.annotations[ANNOTATION_REVISION] and d, timeout=60, what="new revision")
    wait_until(lambda: state_is("running") and get()["status"]["readyReplica"] == 1, timeout=120,
               what="running on the new revision")
    env = {e.name: e.value for e in apps.read_namespaced_deployment(key, kube_namespace)
           .spec.template.spec.containers[0].env}
    assert env["MAX_TOTAL_TOKENS"] == "1024"
    assert len(apps.list_namespaced_replica_set(kube_namespace).items) == 2

    # Scale to zero: 0 replicas in the Deployment, no pods.
    assert http.post("/v2/endpoint/admin/llm/scale-to-zero").status_code == 200
    wait_until(lambda: state_is("scaledToZero"), timeout=60, what="scaledToZero")
    assert apps.read_namespaced_deployment(key, kube_namespace).spec.replicas == 0
    wait_until(lambda: not labelled_objects(kube_api, kube_namespace, key).get("pods"), timeout=60, what="no pods")

    # A request through the gateway wakes it: held until a replica is ready, then a bounded answer.
    started = time.monotonic()
    woke = http.post("/endpoints/admin/llm/v1/chat/completions", headers={"X-Scale-Up-Timeout": "60"},
                     json={"model": "tgi", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
                     timeout=120)
    held = time.monotonic() - started
    # kwok pods serve nothing: the gateway now sends the request to the woken pod's own IP (prefix-aware routing),
    # a simulated address that whatever sits on this machine's network path answers or refuses. The answer is
    # relayed as it came; what matters here is that the request woke the endpoint and came back within its hold.
    assert woke.status_code != 200, woke.text
    assert held < 120
    assert apps.read_namespaced_deployment(key, kube_namespace).spec.replicas == 1
    wait_until(lambda: state_is("running"), timeout=120, what="running after the wake-up")

    # Pause → 0 replicas; resume → minReplica (at least 1).
    assert http.post("/v2/endpoint/admin/llm/pause").status_code == 200
    wait_until(lambda: state_is("paused"), timeout=60, what="paused")
    assert apps.read_namespaced_deployment(key, kube_namespace).spec.replicas == 0
    assert http.post("/v2/endpoint/admin/llm/resume").status_code == 200
    wait_until(lambda: state_is("running"), timeout=120, what="running after resume")
    assert apps.read_namespaced_deployment(key, kube_namespace).spec.replicas == 1

    # Delete: the row goes, and so does every object with the endpoint's labels.
    assert http.delete("/v2/endpoint/admin/llm").status_code == 202
    wait_until(lambda: http.get("/v2/endpoint/admin/llm").status_code == 404, timeout=120, what="row deleted")
    wait_until(lambda: not labelled_objects(kube_api, kube_namespace, key), timeout=120, what="no objects left")


def test_image_pull_failure_through_the_api_is_failed_with_the_reason(k8s_stack):
    http = httpx.Client(base_url=k8s_stack.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
    created = http.post("/v2/endpoint/admin", json={
        "name": "broken", "type": "protected", "provider": {"vendor": "aws", "region": "us-east-1"},
        "compute": {"accelerator": "cpu", "instanceType": "intel-icl", "instanceSize": "x1",
                    "scaling": {"minReplica": 1, "maxReplica": 1}},
        "model": {"repository": "acme/tiny-llama", "framework": "custom", "task": "text-generation",
                  "image": {"custom": {"url": "unpullable.kwok.invalid/acme/server:1", "healthRoute": "/health",
                                       "port": 8080}}},
    })
    assert created.status_code == 201, created.text
    body = wait_until(lambda: (b := http.get("/v2/endpoint/admin/broken").json())["status"]["state"] == "failed" and b,
                      timeout=120, what="failed")
    assert "ImagePullBackOff" in body["status"]["message"]


def _catalog_entry(http: httpx.Client, instance_type: str, size: str) -> dict:
    wire = http.get("/v2/provider/admin").json()
    return next(c for v in wire["vendors"] if v["name"] == "aws" for r in v["regions"] if r["name"] == "us-east-1"
                for c in r["computes"] if c["instanceType"] == instance_type and c["instanceSize"] == size)


def test_no_gpu_capacity_is_pending_with_the_schedulers_reason_until_a_node_is_added(k8s_stack, kube_cluster):
    http = httpx.Client(base_url=k8s_stack.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
    # The catalog shows what the nodes allow: 2 nodes x 4 GPUs, so an 8-GPU instance cannot be placed.
    x8 = wait_until(lambda: (e := _catalog_entry(http, "nvidia-l4", "x8"))["status"] == "not_available" and e,
                    timeout=60, what="the catalog to reflect the cluster's GPUs")
    assert x8["quota"]["maxAccelerators"] == 8
    assert _catalog_entry(http, "nvidia-l4", "x1")["status"] == "available"
    created = http.post("/v2/endpoint/admin", json={
        "name": "big", "type": "protected", "provider": {"vendor": "aws", "region": "us-east-1"},
        "compute": {"accelerator": "gpu", "instanceType": "nvidia-l4", "instanceSize": "x8",
                    "scaling": {"minReplica": 1, "maxReplica": 1}},
        "model": {"repository": "acme/big-llama", "framework": "pytorch", "task": "text-generation",
                  "image": {"huggingface": {}}}})
    assert created.status_code == 201, created.text
    body = wait_until(lambda: "Insufficient nvidia.com/gpu" in ((b := http.get("/v2/endpoint/admin/big").json())[
        "status"].get("message") or "") and b, timeout=120, what="pending with the scheduler's reason")
    assert body["status"]["state"] == "pending"
    node = kube_cluster.add_node(gpus=8)
    try:
        wait_until(lambda: _catalog_entry(http, "nvidia-l4", "x8")["quota"]["maxAccelerators"] == 16, timeout=60,
                   what="the catalog to count the new node")
        wait_until(lambda: http.get("/v2/endpoint/admin/big").json()["status"]["state"] == "running", timeout=120,
                   what="running once a big enough node joined")
    finally:
        http.delete("/v2/endpoint/admin/big")
        wait_until(lambda: http.get("/v2/endpoint/admin/big").status_code == 404, timeout=120, what="deleted")
        kube_cluster.remove_node(node)
