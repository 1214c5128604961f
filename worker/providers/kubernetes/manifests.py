"""Pure rendering: a `DesiredDeployment` becomes the Deployment, Service and Secret of one endpoint (plus, for a
custom image with registry credentials, a `kubernetes.io/dockerconfigjson` Secret the pods pull with).

No I/O, so the manifests are unit-testable and the real API server validates them in a server-side dry-run
(tests/k8s/test_manifests.py). Every object carries the endpoint's labels; the Service and the Secret are owned
by the Deployment (set when applying, once its uid is known), so deleting the Deployment removes everything.

The pod: the bundled runtime image (or the custom image `url`) with the endpoint's command/args and env (TGI
variables, `MODEL_ID=/repository`), an init container that downloads the model snapshot (repository + revision)
into the model volume mounted at `/repository`, `/dev/shm` as a memory emptyDir, startup and readiness probes on
the health route sized for slow model loads, `nvidia.com/gpu` limits with the catalog's node selector and GPU
tolerations, and a non-root, no-privilege-escalation security context.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field

from common.kube_names import GROUP, LABEL_ENDPOINT, LABEL_MANAGED_BY, MANAGED_BY, RUNTIME_CONTAINER
from worker.providers.base import DesiredDeployment, ProviderPermanentError

LABEL_ENDPOINT_ID = f"{GROUP}/endpoint-id"
ANNOTATION_REVISION = f"{GROUP}/revision"
ANNOTATION_APPLIED = f"{GROUP}/applied-hash"
ANNOTATION_NAMESPACE = f"{GROUP}/namespace"
ANNOTATION_NAME = f"{GROUP}/name"
DOWNLOAD_CONTAINER = "model-download"
REPOSITORY_PATH = "/repository"
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


def _image(desired: DesiredDeployment, opts: RenderOptions) -> str:
    if not desired.image:
        return opts.runtime_image
    kind, variant = next(iter(desired.image.items()))
    variant = variant or {}
    url = variant.get("url") if isinstance(variant, dict) else None
    if kind == "custom":
        if not url:
            raise ProviderPermanentError("a custom image needs a `url`")
        return str(url)
    return str(url) if url else opts.runtime_image


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


def _probe(desired: DesiredDeployment, *, failure_threshold: int) -> dict:
    return {
        "httpGet": {"path": desired.health_route, "port": "http"},
        "periodSeconds": PROBE_PERIOD,
        "timeoutSeconds": 5,
        "failureThreshold": failure_threshold,
    }


def _env(desired: DesiredDeployment, opts: RenderOptions) -> list[dict]:
    env = {
        # TGI's variable names, understood by the bundled runtime and TGI-compatible custom images alike.
        "MODEL_ID": REPOSITORY_PATH,
        "PORT": str(desired.port),
        "HOSTNAME": "0.0.0.0",
        "HF_HUB_OFFLINE": "1",
        "HOME": "/tmp",
        **({"NUM_SHARD": str(desired.hardware.num_accelerators)} if desired.hardware.num_accelerators > 1 else {}),
        **({"TASK": desired.task} if desired.task else {}),
        **desired.env,
    }
    return [{"name": k, "value": v} for k, v in env.items()]


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
    startup_threshold = max(1, opts.startup_timeout_seconds // PROBE_PERIOD)
    container: dict = {
        "name": RUNTIME_CONTAINER,
        "image": _image(desired, opts),
        "imagePullPolicy": opts.image_pull_policy,
        "ports": [{"name": "http", "containerPort": desired.port, "protocol": "TCP"}],
        "env": _env(desired, opts),
        "envFrom": [{"secretRef": {"name": _secret_name(desired)}}],
        "resources": _resources(desired, opts),
        "startupProbe": _probe(desired, failure_threshold=startup_threshold),
        "readinessProbe": _probe(desired, failure_threshold=3),
        "volumeMounts": [
            {"name": "model", "mountPath": REPOSITORY_PATH, "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": _container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if desired.command:
        container["command"] = list(desired.command)
    if desired.args:
        container["args"] = list(desired.args)
    pod_annotations = {**opts.extra_annotations, ANNOTATION_REVISION: str(desired.revision),
                       f"{GROUP}/secret-digest": secret_digest}
    pod_spec: dict = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER,
                            "fsGroup": RUN_AS_USER, "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": [_download_container(desired, opts)],
        "containers": [container],
        "volumes": [
            _model_volume(opts),
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": opts.shm_size}},
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
