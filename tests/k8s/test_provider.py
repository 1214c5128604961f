"""The Kubernetes provider against a real API server, controllers and scheduler with kwok nodes.

kwok plays the kubelet (see cli/devcluster/stages.py): healthy pods turn Ready at once, as after a passing
readiness probe; fault images (`*.kwok.invalid/`) turn into image pull errors, crash loops, OOM kills or pods
that never become ready.
"""

from __future__ import annotations

import base64
import dataclasses

import pytest
from kubernetes import client as k8s

from cli.devcluster import FAULT_PREFIXES, DevCluster
from tests.k8s.conftest import CPU, desired, with_gpus
from worker.providers.base import FailureReason, ProviderPermanentError
from worker.providers.kubernetes import KubernetesProvider
from worker.providers.kubernetes.manifests import ANNOTATION_REVISION, DOCKER_HUB, LABEL_ENDPOINT, registry_host

pytestmark = pytest.mark.k8s

WAIT = 90.0


def ready(provider: KubernetesProvider, key: str, n: int = 1, revision: int | None = None) -> bool:
    o = provider.observe(key)
    current = [r for r in o.replicas if r.ready and (revision is None or r.revision == revision)]
    return len(current) == n and o.rollout_complete and o.ready_replicas == n


def labelled_objects(api: k8s.ApiClient, namespace: str, key: str) -> dict[str, list[str]]:
    sel = f"{LABEL_ENDPOINT}={key}"
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    found = {
        "deployments": apps.list_namespaced_deployment(namespace, label_selector=sel).items,
        "replicasets": apps.list_namespaced_replica_set(namespace, label_selector=sel).items,
        "pods": core.list_namespaced_pod(namespace, label_selector=sel).items,
        "services": core.list_namespaced_service(namespace, label_selector=sel).items,
        "secrets": core.list_namespaced_secret(namespace, label_selector=sel).items,
    }
    return {kind: [o.metadata.name for o in items] for kind, items in found.items() if items}


def test_apply_creates_deployment_service_secret_and_pods_become_ready(provider, kube_api, kube_namespace):
    d = desired("ep-1-llama", image={"tgi": {"url": "ghcr.io/huggingface/text-generation-inference:3.3"}})
    provider.apply(d)
    apps, core = k8s.AppsV1Api(kube_api), k8s.CoreV1Api(kube_api)
    dep = apps.read_namespaced_deployment("ep-1-llama", kube_namespace)
    pod = dep.spec.template.spec
    runtime, = pod.containers
    init, = pod.init_containers
    assert runtime.image == "ghcr.io/huggingface/text-generation-inference:3.3"
    env = {e.name: e.value for e in runtime.env}
    assert env["MODEL_ID"] == "/repository" and env["MAX_INPUT_LENGTH"] == "512" and env["PORT"] == "8080"
    assert "OPENAI_KEY" not in env  # secrets come from the Secret, never inline
    assert runtime.env_from[0].secret_ref.name == "ep-1-llama"
    assert init.command[:3] == ["hf", "download", "acme/tiny-llama"] and "0123456789abcdef" in init.command
    assert {m.mount_path for m in init.volume_mounts} >= {"/repository"}
    assert {m.mount_path for m in runtime.volume_mounts} >= {"/repository", "/dev/shm"}
    assert runtime.readiness_probe.http_get.path == "/health"
    assert runtime.startup_probe.http_get.path == "/health"
    # Sized for slow loads: 30 minutes of startup-probe failures before the kubelet gives up.
    assert runtime.startup_probe.failure_threshold * runtime.startup_probe.period_seconds >= 1800
    assert runtime.resources.limits["nvidia.com/gpu"] == "1"
    # 80% of the catalog's 4 CPUs / 16 GB requested (nodes never have all of it allocatable), full memory as limit.
    assert runtime.resources.requests["cpu"] == "3200m" and runtime.resources.limits["memory"] == "16Gi"
    assert pod.node_selector == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert any(t.key == "nvidia.com/gpu" for t in pod.tolerations)
    assert pod.security_context.run_as_non_root and pod.security_context.run_as_user == 1000
    assert runtime.security_context.allow_privilege_escalation is False
    shm = next(v for v in pod.volumes if v.name == "dshm")
    assert shm.empty_dir.medium == "Memory"
    assert dep.metadata.managed_fields[0].manager == "endpointctl"

    svc = core.read_namespaced_service("ep-1-llama", kube_namespace)
    secret = core.read_namespaced_secret("ep-1-llama", kube_namespace)
    for obj in (svc, secret):
        owner, = obj.metadata.owner_references
        assert (owner.kind, owner.name, owner.uid) == ("Deployment", "ep-1-llama", dep.metadata.uid)
        assert obj.metadata.labels[LABEL_ENDPOINT] == "ep-1-llama"
    assert base64.b64decode(secret.data["OPENAI_KEY"]).decode() == "s3cr3t"
    assert base64.b64decode(secret.data["HF_TOKEN"]).decode() == "hf_test_token"
    assert svc.spec.selector == {LABEL_ENDPOINT: "ep-1-llama"}

    assert provider.wait_until(lambda: ready(provider, "ep-1-llama"), WAIT), provider.observe("ep-1-llama")
    o = provider.observe("ep-1-llama")
    assert o.exists and o.revision == 1 and o.desired_replicas == 1 and o.failure is None
    assert o.service_url == f"http://ep-1-llama.{kube_namespace}.svc.cluster.local"
    assert provider.list_keys() == ["ep-1-llama"]


def test_reapplying_the_same_spec_costs_no_request(provider, kube_api, kube_namespace):
    d = desired("ep-2-same")
    provider.apply(d)
    before = k8s.AppsV1Api(kube_api).read_namespaced_deployment("ep-2-same", kube_namespace).metadata.resource_version
    calls = []
    original = provider._apply
    provider._apply = lambda *a, **kw: calls.append(a) or original(*a, **kw)  # count requests the provider sends
    provider.apply(d)
    provider.apply(d)
    assert calls == []
    provider.apply(dataclasses.replace(d, replicas=2))
    assert len(calls) == 3  # a real change: Deployment, Secret, Service applied again
    apps = k8s.AppsV1Api(kube_api)
    after = apps.read_namespaced_deployment("ep-2-same", kube_namespace)
    assert after.metadata.resource_version != before and after.spec.replicas == 2

    # Drift: someone scales the Deployment by hand; the next pass notices (generation moved) and repairs it.
    apps.patch_namespaced_deployment_scale("ep-2-same", kube_namespace, {"spec": {"replicas": 5}})
    assert provider.wait_until(lambda: provider.deployments.get("ep-2-same")["spec"]["replicas"] == 5, 30)
    provider.apply(dataclasses.replace(d, replicas=2))
    assert len(calls) == 6
    assert apps.read_namespaced_deployment("ep-2-same", kube_namespace).spec.replicas == 2


def test_scale_to_zero_and_back(provider):
    d = desired("ep-3-scale", hardware=CPU, replicas=2)
    provider.apply(d)
    assert provider.wait_until(lambda: ready(provider, "ep-3-scale", 2), WAIT)
    provider.apply(dataclasses.replace(d, replicas=0))
    assert provider.wait_until(lambda: not (o := provider.observe("ep-3-scale")).replicas and o.rollout_complete, WAIT)
    o = provider.observe("ep-3-scale")
    assert o.exists and o.desired_replicas == 0 and o.ready_replicas == 0 and o.rollout_complete
    provider.apply(dataclasses.replace(d, replicas=1))
    assert provider.wait_until(lambda: ready(provider, "ep-3-scale", 1), WAIT)


def test_update_rolls_out_a_new_revision(provider, kube_api, kube_namespace):
    d = desired("ep-4-roll", hardware=CPU)
    provider.apply(d)
    assert provider.wait_until(lambda: ready(provider, "ep-4-roll", revision=1), WAIT)
    provider.apply(dataclasses.replace(d, revision=2, env={**d.env, "MAX_TOTAL_TOKENS": "2048"}))
    o = provider.observe("ep-4-roll")
    # The controller has not seen the new generation yet: the rollout cannot be complete.
    assert o.revision == 2 and not o.rollout_complete
    assert provider.wait_until(lambda: ready(provider, "ep-4-roll", revision=2), WAIT), provider.observe("ep-4-roll")
    assert all(r.revision == 2 for r in provider.observe("ep-4-roll").replicas)
    sets = k8s.AppsV1Api(kube_api).list_namespaced_replica_set(kube_namespace,
                                                              label_selector=f"{LABEL_ENDPOINT}=ep-4-roll").items
    revisions = sorted(rs.spec.template.metadata.annotations[ANNOTATION_REVISION] for rs in sets)
    assert revisions == ["1", "2"]


def test_delete_leaves_no_labelled_object(provider, kube_api, kube_namespace):
    d = desired("ep-5-gone", hardware=CPU, replicas=2)
    provider.apply(d)
    assert provider.wait_until(lambda: ready(provider, "ep-5-gone", 2), WAIT)
    assert set(labelled_objects(kube_api, kube_namespace, "ep-5-gone")) == {
        "deployments", "replicasets", "pods", "services", "secrets"}
    provider.delete("ep-5-gone")
    provider.delete("ep-5-gone")  # idempotent
    assert provider.wait_until(lambda: not provider.observe("ep-5-gone").exists, WAIT)
    assert provider.wait_until(lambda: not labelled_objects(kube_api, kube_namespace, "ep-5-gone"), WAIT), \
        labelled_objects(kube_api, kube_namespace, "ep-5-gone")
    assert provider.list_keys() == []


@pytest.mark.parametrize(("fault", "reason", "needle"), [
    ("image-pull", FailureReason.IMAGE_PULL_FAILED, "ImagePullBackOff"),
    ("crash-loop", FailureReason.CRASH_LOOP, "RuntimeError: simulated model server crash"),
    ("oom-killed", FailureReason.OOM_KILLED, "exited with code 137"),
])
def test_container_faults_are_failures_with_the_reason(provider, fault, reason, needle):
    key = f"ep-6-{fault}"
    provider.apply(desired(key, hardware=CPU, image={"custom": {"url": FAULT_PREFIXES[fault] + "model:1"}}))
    assert provider.wait_until(lambda: provider.observe(key).failure is not None, WAIT), provider.observe(key)
    o = provider.observe(key)
    assert o.failure == reason
    assert needle in (o.message or ""), o.message
    assert o.ready_replicas == 0


def test_pod_that_never_passes_its_probes_is_initializing(provider):
    key = "ep-7-slow"
    provider.apply(desired(key, hardware=CPU, image={"custom": {"url": FAULT_PREFIXES["never-ready"] + "m:1"}}))
    assert provider.wait_until(lambda: any(r.phase == "Starting" for r in provider.observe(key).replicas), WAIT)
    o = provider.observe(key)
    assert o.failure is None and o.pending_reason is None and o.ready_replicas == 0 and not o.rollout_complete


@pytest.mark.slow
def test_update_that_never_becomes_ready_exceeds_the_progress_deadline(make_provider):
    provider = make_provider(progress_deadline_seconds=5)
    d = desired("ep-8-stuck", hardware=CPU)
    provider.apply(d)
    assert provider.wait_until(lambda: ready(provider, "ep-8-stuck"), WAIT)
    provider.apply(dataclasses.replace(d, revision=2, image={"custom": {"url": FAULT_PREFIXES["never-ready"] + "m:2"}}))
    assert provider.wait_until(lambda: provider.observe("ep-8-stuck").failure is not None, WAIT)
    o = provider.observe("ep-8-stuck")
    assert o.failure == FailureReason.PROGRESS_DEADLINE_EXCEEDED and "progress" in (o.message or "")
    # The old revision keeps serving (maxUnavailable 0).
    assert [r.revision for r in o.replicas if r.ready] == [1]


@pytest.mark.slow
def test_more_gpus_than_any_node_has_is_pending_until_a_node_is_added(provider, kube_cluster: DevCluster):
    key = "ep-9-big"
    provider.apply(desired(key, hardware=with_gpus(8)))
    assert provider.wait_until(lambda: provider.observe(key).pending_reason is not None, WAIT)
    o = provider.observe(key)
    assert "Insufficient nvidia.com/gpu" in o.pending_reason and o.failure is None
    node = kube_cluster.add_node(gpus=8)
    try:
        assert provider.wait_until(lambda: ready(provider, key), WAIT), provider.observe(key)
        assert provider.observe(key).pending_reason is None
        pools = {p.instance_type: p for p in provider.gpu_capacity()}
        assert pools["nvidia-l4"].allocatable_gpus == 2 * 4 + 8 and pools["nvidia-l4"].used_gpus == 8
        assert pools["nvidia-l4"].gpu_product == "NVIDIA-L4" and pools["nvidia-l4"].ready_nodes == 3
        # 2 nodes x 4 GPUs + one 8-GPU node running the 8-GPU pod: the largest node has 8, the freest 4 free.
        assert provider.accelerator_usage() == {"nvidia-l4": {"allocatable": 16, "used": 8,
                                                              "max_allocatable_per_node": 8, "max_free_per_node": 4}}
    finally:
        provider.delete(key)
        kube_cluster.remove_node(node)


@pytest.mark.slow
def test_node_not_ready_evicts_pods_and_the_endpoint_recovers_elsewhere(provider, kube_api, kube_cluster):
    key = "ep-10-evict"
    provider.apply(desired(key, hardware=with_gpus(4)))  # a whole node
    assert provider.wait_until(lambda: ready(provider, key), WAIT)
    core = k8s.CoreV1Api(kube_api)
    selector = f"{LABEL_ENDPOINT}={key}"
    first = core.list_namespaced_pod(provider.namespace, label_selector=selector).items[0]
    first_node = first.spec.node_name

    def moved() -> bool:
        o = provider.observe(key)
        pods = core.list_namespaced_pod(provider.namespace, label_selector=selector).items
        return (o.ready_replicas == 1 and all(p.metadata.name != first.metadata.name for p in pods)
                and all(p.spec.node_name != first_node for p in pods))

    kube_cluster.set_node_ready(first_node, False)
    try:
        # The node-lifecycle controller taints the NotReady node, the taint manager evicts the pod (the provider
        # tolerates not-ready for only 2 s here), the ReplicaSet replaces it on the healthy GPU node.
        assert provider.wait_until(moved, 150.0), provider.observe(key)
        node = core.read_node(first_node)
        assert any(t.key == "node.kubernetes.io/not-ready" and t.effect == "NoExecute" for t in node.spec.taints)
        events = core.list_namespaced_event(provider.namespace,
                                            field_selector=f"involvedObject.name={first.metadata.name}").items
        assert any(e.reason == "TaintManagerEviction" for e in events), [(e.reason, e.message) for e in events]
        assert provider.observe(key).failure is None
    finally:
        kube_cluster.set_node_ready(first_node, True)
        provider.delete(key)
    assert provider.wait_until(lambda: not provider.observe(key).exists, WAIT)
    ready_again = lambda: any(c.type == "Ready" and c.status == "True"  # noqa: E731
                              for c in core.read_node(first_node).status.conditions)
    assert provider.wait_until(ready_again, WAIT)


def test_manifests_pass_server_side_dry_run(make_provider, kube_api, kube_namespace):
    provider = make_provider(storage_class="fast-ssd", image_pull_secrets=("regcred",),
                             extra_labels={"team": "ml"}, extra_annotations={"example.com/owner": "ml"},
                             tolerations=({"key": "dedicated", "operator": "Equal", "value": "llm",
                                           "effect": "NoSchedule"},))
    provider.start()  # creates the namespace
    variants = [
        desired("ep-11-gpu", hardware=with_gpus(4)),
        desired("ep-12-cpu", hardware=CPU, replicas=0),
        desired("ep-13-custom", image={"custom": {"url": "registry.example.com/me/server:1"}},
                command=["python", "-m", "server"], args=["--port", "8080"], secrets={}),
        desired("ep-15-private", image={"custom": {"url": "registry.example.com:5000/me/server:1"}},
                registry_credentials={"username": "me", "password": "pa:ss"}),
    ]
    for d in variants:
        provider.apply(d, dry_run=True)
    assert labelled_objects(kube_api, kube_namespace, "ep-11-gpu") == {}
    with pytest.raises(ProviderPermanentError, match="rejected"):
        provider.apply(desired("ep-14-bad", hardware=CPU, port=70000), dry_run=True)


def test_logs_come_through_the_api_server(provider):
    provider.apply(desired("ep-15-logs", hardware=CPU))
    assert provider.wait_until(lambda: ready(provider, "ep-15-logs"), WAIT)
    lines = list(provider.logs("ep-15-logs", tail=10))
    assert any("serving on 0.0.0.0" in line for line in lines), lines
    assert all(line.startswith("[ep-15-logs-") for line in lines)


def _docker_config(kube_api: k8s.ApiClient, namespace: str, name: str) -> dict:
    import json

    secret = k8s.CoreV1Api(kube_api).read_namespaced_secret(name, namespace)
    assert secret.type == "kubernetes.io/dockerconfigjson"
    assert [ref.kind for ref in secret.metadata.owner_references or []] == ["Deployment"]
    return json.loads(base64.b64decode(secret.data[".dockerconfigjson"]))


def test_registry_credentials_of_a_custom_image_become_its_pull_secret(make_provider, kube_api, kube_namespace):
    provider = make_provider(image_pull_secrets=("cluster-wide",))
    image = {"custom": {"url": "registry.example.com:5000/acme/server:2", "port": 8080}}
    d = desired("ep-16-private", hardware=CPU, image=image, registry_credentials={"username": "bot", "password": "x:y"})
    provider.apply(d)
    auths = _docker_config(kube_api, kube_namespace, "ep-16-private-registry")["auths"]
    assert auths == {"registry.example.com:5000": {"username": "bot", "password": "x:y",
                                                   "auth": base64.b64encode(b"bot:x:y").decode()}}
    pod_spec = k8s.AppsV1Api(kube_api).read_namespaced_deployment("ep-16-private", kube_namespace).spec.template.spec
    assert [s.name for s in pod_spec.image_pull_secrets] == ["cluster-wide", "ep-16-private-registry"]
    # Rotated password: the secret follows; credentials removed: the pull secret goes, the cluster-wide one stays.
    provider.apply(dataclasses.replace(d, revision=2, registry_credentials={"username": "bot", "password": "new"}))
    assert _docker_config(kube_api, kube_namespace, "ep-16-private-registry")["auths"][
        "registry.example.com:5000"]["password"] == "new"
    provider.apply(dataclasses.replace(d, revision=3, registry_credentials=None))
    names = [s.metadata.name for s in k8s.CoreV1Api(kube_api).list_namespaced_secret(kube_namespace).items]
    assert "ep-16-private-registry" not in names and "ep-16-private" in names
    pod_spec = k8s.AppsV1Api(kube_api).read_namespaced_deployment("ep-16-private", kube_namespace).spec.template.spec
    assert [s.name for s in pod_spec.image_pull_secrets] == ["cluster-wide"]
    # Credentials on a non-custom image are ignored (the API refuses them; the renderer does not trust that).
    provider.apply(desired("ep-17-hub", hardware=CPU, registry_credentials={"username": "bot", "password": "x"}))
    assert "ep-17-hub-registry" not in [s.metadata.name for s in
                                        k8s.CoreV1Api(kube_api).list_namespaced_secret(kube_namespace).items]
    provider.apply(dataclasses.replace(d, revision=4))
    provider.delete("ep-16-private")
    assert provider.wait_until(lambda: not labelled_objects(kube_api, kube_namespace, "ep-16-private"), WAIT)


@pytest.mark.parametrize(("image", "host"), [
    ("ghcr.io/acme/server:1", "ghcr.io"),
    ("registry.example.com:5000/acme/server", "registry.example.com:5000"),
    ("localhost/server", "localhost"),
    ("acme/server:1", DOCKER_HUB),
    ("server", DOCKER_HUB),
])
def test_registry_host_of_an_image_reference(image, host):
    assert registry_host(image) == host
