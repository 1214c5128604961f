"""Pure rendering: a `DesiredDeployment` becomes the Deployment, Service and Secret of one endpoint (plus, for a
custom image with registry credentials, a `kubernetes.io/dockerconfigjson` Secret the pods pull with).

No I/O, so the manifests are unit-testable and the real API server validates them in a server-side dry-run
(tests/k8s/test_manifests.py). Every object carries the endpoint's labels; the Service and the Secret are owned
by the Deployment (set when applying, once its uid is known), so deleting the Deployment removes everything.

The pod: the engine the image variant names, rendered by `worker.engines.engine_run` (image, command line or env
from that engine's documentation, port, health and metrics routes, `/dev/shm` where it needs one, a startup budget
sized for its load times), an init container that downloads the model snapshot (repository + revision) into the
model volume mounted at `/repository`, startup and readiness probes on the health route, `nvidia.com/gpu` limits
with the catalog's node selector and GPU tolerations, and a non-root, no-privilege-escalation security context.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field

from common.kube_names import GROUP, LABEL_ENDPOINT, LABEL_MANAGED_BY, MANAGED_BY, RUNTIME_CONTAINER
from worker.engines import REPOSITORY_PATH, EngineRun, engine_run
from worker.providers.base import DesiredDeployment, ProviderPermanentError

LABEL_ENDPOINT_ID = f"{GROUP}/endpoint-id"
ANNOTATION_REVISION = f"{GROUP}/revision"
ANNOTATION_APPLIED = f"{GROUP}/applied-hash"
ANNOTATION_NAMESPACE = f"{GROUP}/namespace"
ANNOTATION_NAME = f"{GROUP}/name"
ANNOTATION_ENGINE = f"{GROUP}/engine"
DOWNLOAD_CONTAINER = "model-download"
GPU_RESOURCE = "nvidia.com/gpu"
RUN_AS_USER = 1000
PROBE_PERIOD = 10


@dataclass(frozen=True)
class RenderOptions:
    """Cluster-wide choices from the settings (what differs between clusters, not between endpoints)."""

    namespace: str
    runtime_image: str
    downloader_image: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    image_pull_policy: str = "IfNotPresent"
    storage_class: str | None = None
    model_cache_size: str = "100Gi"
    shm_size: str = "1Gi"
    extra_labels: dict[str, str] = field(default_factory=dict)
    extra_annotations: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict, ...] = ()
    node_failure_toleration_seconds: int = 60
    startup_timeout_seconds: int = 1800
    progress_deadline_seconds: int = 2400
    resource_request_fraction: float = 0.8
    hub_token: str | None = None
    hub_endpoint: str | None = None
    engine_images: dict[str, str] = field(default_factory=dict)  # engine kind -> image, for variants without `url`
    gguf_image: str | None = None  # llama.cpp image that serves GGUF repositories sent with the default image


@dataclass(frozen=True)
class Manifests:
    deployment: dict
    service: dict
    secret: dict
    applied_hash: str
    registry_secret: dict | None = None  # custom image with credentials only


DOCKER_HUB = "https://index.docker.io/v1/"


def registry_host(image: str) -> str:
    """The registry an image reference pulls from, as a docker config `auths` key (Docker Hub's legacy URL when
    the first path component is not a host: no dot, no port, not localhost)."""
    first, sep, _rest = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return DOCKER_HUB


def registry_secret_name(key: str) -> str:
    return f"{key}-registry"


def labels_for(desired: DesiredDeployment, opts: RenderOptions) -> dict[str, str]:
    return {
        **opts.extra_labels,
        "app.kubernetes.io/name": "endpointctl-endpoint",
        "app.kubernetes.io/instance": desired.key,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_ENDPOINT: desired.key,
        LABEL_ENDPOINT_ID: str(desired.endpoint_id),
    }


def engine_for(desired: DesiredDeployment, opts: RenderOptions) -> EngineRun:
    """The engine container `desired` asks for, with this cluster's images and startup budget."""
    try:
        return engine_run(desired, runtime_image=opts.runtime_image, engine_images=opts.engine_images,
                          gguf_image=opts.gguf_image, shm_size=opts.shm_size,
                          startup_timeout_seconds=opts.startup_timeout_seconds)
    except ValueError as exc:
        raise ProviderPermanentError(str(exc)) from exc


def _node_placement(desired: DesiredDeployment, opts: RenderOptions) -> tuple[dict[str, str], list[dict]]:
    hw = desired.hardware
    selector = dict(hw.node_selector)
    tolerations = [dict(t) for t in opts.tolerations]
    if hw.accelerator == "gpu" and hw.num_accelerators > 0:
        if not selector:
            # GPU feature discovery labels the product; fall back to the cloud's instance-type label.
            selector = ({"nvidia.com/gpu.product": hw.gpu_product} if hw.gpu_product
                        else {"node.kubernetes.io/instance-type": hw.instance_type})
        # Managed GPU pools taint their nodes so that only GPU workloads land there.
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    # Fail over faster than the 300 s default when a node dies: GPU capacity elsewhere is worth using.
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute",
                            "tolerationSeconds": opts.node_failure_toleration_seconds})
    return selector, tolerations


def _resources(desired: DesiredDeployment, opts: RenderOptions) -> dict:
    """Requests are a share of the catalog instance (see `resource_request_fraction`); the memory limit is the
    instance's full memory, so the runtime is OOM-killed where the instance would have run out."""
    hw = desired.hardware
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    share = min(max(opts.resource_request_fraction, 0.05), 1.0)
    if hw.num_cpus:
        requests["cpu"] = f"{max(100, int(hw.num_cpus * 1000 * share))}m"
    if hw.memory_gb:
        requests["memory"] = f"{max(128, int(hw.memory_gb * 1024 * share))}Mi"
        limits["memory"] = f"{int(hw.memory_gb * 1024)}Mi"
    if hw.accelerator == "gpu" and hw.num_accelerators > 0:
        limits[GPU_RESOURCE] = str(hw.num_accelerators)
        requests[GPU_RESOURCE] = str(hw.num_accelerators)
    return {"requests": requests, "limits": limits}


def _probe(run: EngineRun, *, failure_threshold: int) -> dict:
    return {
        "httpGet": {"path": run.health_path, "port": "http"},
        "periodSeconds": PROBE_PERIOD,
        "timeoutSeconds": 5,
        "failureThreshold": failure_threshold,
    }


def _secret_name(desired: DesiredDeployment) -> str:
    return desired.key


def _download_container(desired: DesiredDeployment, opts: RenderOptions) -> dict:
    command = ["hf", "download", desired.repository, "--local-dir", REPOSITORY_PATH]
    if desired.model_revision:
        command += ["--revision", desired.model_revision]
    env = [{"name": "HF_HOME", "value": "/tmp/hf"}, {"name": "HOME", "value": "/tmp"}]
    if opts.hub_endpoint:
        env.append({"name": "HF_ENDPOINT", "value": opts.hub_endpoint})
    env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": _secret_name(desired), "key": "HF_TOKEN", "optional": True}}})
    return {
        "name": DOWNLOAD_CONTAINER,
        "image": opts.downloader_image or opts.runtime_image,
        "imagePullPolicy": opts.image_pull_policy,
        "command": command,
        "env": env,
        "volumeMounts": [{"name": "model", "mountPath": REPOSITORY_PATH}, {"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": _container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
    }


def _quantity(size: int) -> str:
    """Bytes as the largest exact binary quantity (1073741824 -> 1Gi)."""
    for suffix, unit in (("Ti", 1024 ** 4), ("Gi", 1024 ** 3), ("Mi", 1024 ** 2), ("Ki", 1024)):
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def _container_security() -> dict:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True}


def _model_volume(opts: RenderOptions) -> dict:
    if opts.storage_class:
        # A per-pod PVC created and deleted with the pod: survives container restarts, never shared.
        return {"name": "model", "ephemeral": {"volumeClaimTemplate": {"spec": {
            "accessModes": ["ReadWriteOnce"], "storageClassName": opts.storage_class,
            "resources": {"requests": {"storage": opts.model_cache_size}}}}}}
    return {"name": "model", "emptyDir": {"sizeLimit": opts.model_cache_size}}


def render(desired: DesiredDeployment, opts: RenderOptions) -> Manifests:
    """The three objects, without owner references (those need the applied Deployment's uid)."""
    labels = labels_for(desired, opts)
    selector = {LABEL_ENDPOINT: desired.key}
    annotations = {**opts.extra_annotations, ANNOTATION_NAMESPACE: desired.namespace, ANNOTATION_NAME: desired.name}
    secret_data = {k: base64.b64encode(v.encode()).decode() for k, v in sorted(desired.secrets.items())}
    if opts.hub_token and "HF_TOKEN" not in secret_data:
        secret_data["HF_TOKEN"] = base64.b64encode(opts.hub_token.encode()).decode()
    # Pods restart when the Secret's content changes (env from a Secret is read at container start only).
    secret_digest = hashlib.sha256(json.dumps(secret_data, sort_keys=True).encode()).hexdigest()[:16]
    node_selector, tolerations = _node_placement(desired, opts)
    run = engine_for(desired, opts)
    startup_threshold = max(1, run.startup_seconds // PROBE_PERIOD)
    ports = [{"name": "http", "containerPort": run.port, "protocol": "TCP"}]
    if run.metrics_path and run.metrics_port != run.port:
        ports.append({"name": "metrics", "containerPort": run.metrics_port, "protocol": "TCP"})
    container: dict = {
        "name": RUNTIME_CONTAINER,
        "image": run.image,
        "imagePullPolicy": opts.image_pull_policy,
        "ports": ports,
        "env": [{"name": k, "value": v} for k, v in run.env.items()],
        "envFrom": [{"secretRef": {"name": _secret_name(desired)}}],
        "resources": _resources(desired, opts),
        "startupProbe": _probe(run, failure_threshold=startup_threshold),
        "readinessProbe": _probe(run, failure_threshold=3),
        "volumeMounts": [
            {"name": "model", "mountPath": REPOSITORY_PATH, "readOnly": True},
            *([{"name": "dshm", "mountPath": "/dev/shm"}] if run.shm_bytes else []),
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": _container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if run.command:
        container["command"] = list(run.command)
    if run.args:
        container["args"] = list(run.args)
    # Which engine runs, and where it exports Prometheus metrics (the conventional scrape annotations).
    pod_annotations = {**opts.extra_annotations, ANNOTATION_REVISION: str(desired.revision),
                       f"{GROUP}/secret-digest": secret_digest, ANNOTATION_ENGINE: run.kind,
                       **({"prometheus.io/scrape": "true", "prometheus.io/path": run.metrics_path,
                           "prometheus.io/port": str(run.metrics_port)} if run.metrics_path else {})}
    pod_spec: dict = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER,
                            "fsGroup": RUN_AS_USER, "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": [_download_container(desired, opts)],
        "containers": [container],
        "volumes": [
            _model_volume(opts),
            *([{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": _quantity(run.shm_bytes)}}]
              if run.shm_bytes else []),
            {"name": "tmp", "emptyDir": {}},
        ],
        "tolerations": tolerations,
        "terminationGracePeriodSeconds": 30,
    }
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    pull_secrets = list(opts.image_pull_secrets)
    registry_secret = None
    creds = desired.registry_credentials
    if creds and creds.get("username") and "custom" in desired.image:
        user, password = creds["username"], creds.get("password") or ""
        config = {"auths": {registry_host(container["image"]): {
            "username": user, "password": password, "auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}
        registry_secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": registry_secret_name(desired.key), "namespace": opts.namespace, "labels": labels,
                         "annotations": annotations},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64.b64encode(json.dumps(config, sort_keys=True).encode()).decode()},
        }
        pull_secrets.append(registry_secret_name(desired.key))
    if pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in pull_secrets]

    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": desired.key, "namespace": opts.namespace, "labels": labels,
                     "annotations": {**annotations, ANNOTATION_REVISION: str(desired.revision)}},
        "spec": {
            "replicas": desired.replicas,
            "selector": {"matchLabels": selector},
            "revisionHistoryLimit": 2,
            "progressDeadlineSeconds": opts.progress_deadline_seconds,
            # Keep serving during an update: start the new replica before stopping an old one.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": labels, "annotations": pod_annotations}, "spec": pod_spec},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": desired.key, "namespace": opts.namespace, "labels": labels, "annotations": annotations},
        "spec": {"type": "ClusterIP", "selector": selector,
                 "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": _secret_name(desired), "namespace": opts.namespace, "labels": labels,
                     "annotations": annotations},
        "type": "Opaque",
        "data": secret_data,
    }
    digest = hashlib.sha256(json.dumps([deployment, service, secret, registry_secret], sort_keys=True)
                            .encode()).hexdigest()[:20]
    deployment["metadata"]["annotations"][ANNOTATION_APPLIED] = digest
    return Manifests(deployment=deployment, service=service, secret=secret, applied_hash=digest,
                     registry_secret=registry_secret)


def owner_reference(deployment: dict) -> dict:
    meta = deployment["metadata"]
    # blockOwnerDeletion stays off: it would need update rights on deployments/finalizers for nothing we use.
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": False}


def service_url(key: str, namespace: str) -> str:
    return f"http://{key}.{namespace}.svc.cluster.local"
