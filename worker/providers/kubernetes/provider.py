"""The Kubernetes provider: endpoints as Deployment + Service + Secret in one namespace of the user's cluster.

Writes are server-side apply with our field manager (idempotent, and fields other managers own - an HPA's
replicas aside, which we do not use - are left alone). Reads come from the informer-style cache in `cache.py`:
watches on Deployments, Pods (both filtered by our labels), Secrets, Services and Warning Events in the
namespace, plus Nodes for the capacity the catalog reports. So the steady-state cost on the API server is a
handful of long-lived watches, not a GET per endpoint per pass; `apply` skips its requests entirely when the
cached Deployment already carries the hash of what it would apply.

Errors: `ApiException`s and connection errors become `ProviderTemporaryError` (retry with backoff) or
`ProviderPermanentError` (the API server rejected the spec as invalid) here, at the boundary.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from common.config import Settings
from common.logreader import LogReadError
from common.logreader.kubernetes import KubernetesLogReader, api_client_from_settings
from worker.providers.base import (
    DesiredDeployment,
    ObservedDeployment,
    ProviderError,
    ProviderPermanentError,
    ProviderTemporaryError,
    SpecNotice,
)
from worker.providers.kubernetes import status as status_map
from worker.providers.kubernetes.cache import Reflector
from worker.providers.kubernetes.manifests import (
    ANNOTATION_APPLIED,
    GPU_RESOURCE,
    LABEL_ENDPOINT,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    Manifests,
    RenderOptions,
    engine_for,
    owner_reference,
    registry_secret_name,
    render,
    service_url,
)

log = logging.getLogger(__name__)

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
SYNC_TIMEOUT = 30.0
USER_AGENT = "endpointctl-kubernetes-provider/0.1"


@dataclass(frozen=True)
class PoolCapacity:
    """GPU capacity of the nodes sharing one instance type (and GPU product), from the node cache."""

    instance_type: str
    gpu_product: str | None
    nodes: int
    ready_nodes: int
    allocatable_gpus: int
    used_gpus: int  # by endpointctl's own pods bound to those nodes
    max_allocatable_per_node: int = 0  # the biggest pod a Ready node of this pool could ever take
    max_free_per_node: int = 0  # the biggest pod that fits right now


def _translate(exc: Exception, what: str) -> ProviderError:
    if isinstance(exc, ApiException):
        detail = exc.reason
        try:
            detail = json.loads(exc.body or "{}").get("message") or detail
        except ValueError:
            pass
        if exc.status in (400, 422):
            return ProviderPermanentError(f"{what}: the API server rejected the spec: {detail}")
        if exc.status == 403:
            return ProviderTemporaryError(f"{what}: forbidden (check the endpointctl RBAC role): {detail}", delay=30.0)
        if exc.status == 429:
            return ProviderTemporaryError(f"{what}: throttled by the API server: {detail}", delay=5.0)
        return ProviderTemporaryError(f"{what}: HTTP {exc.status}: {detail}")
    return ProviderTemporaryError(f"{what}: Kubernetes API unreachable: {exc}")


class KubernetesProvider:
    name = "kubernetes"
    # Ready already means the kubelet probed the health route; see Settings.k8s_verify_through_gateway.
    verify_through_gateway = False

    def __init__(self, api_client: k8s.ApiClient, options: RenderOptions, *, field_manager: str = "endpointctl",
                 verify_through_gateway: bool = False, create_namespace: bool = True) -> None:
        self.api_client = api_client
        # A recognisable client in API server audit logs and metrics (bench/k8s_scale.py counts by it).
        api_client.user_agent = USER_AGENT
        self.options = options
        self.namespace = options.namespace
        self.field_manager = field_manager
        self.verify_through_gateway = verify_through_gateway
        self.core = k8s.CoreV1Api(api_client)
        self.apps = k8s.AppsV1Api(api_client)
        self._log_reader = KubernetesLogReader(api_client, self.namespace)
        self._create_namespace = create_namespace
        self.sync_timeout = SYNC_TIMEOUT
        # key -> (applied hash, Deployment generation, Secret and Service resourceVersions) of our last apply.
        self._applied: dict[str, tuple] = {}
        self._started = False
        self._start_lock = threading.Lock()
        ns = self.namespace
        ours = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        self.deployments = Reflector("deployments", lambda **kw: self.apps.list_namespaced_deployment(ns, **kw),
                                     index_label=LABEL_ENDPOINT, label_selector=ours)
        self.pods = Reflector("pods", lambda **kw: self.core.list_namespaced_pod(ns, **kw),
                              index_label=LABEL_ENDPOINT, label_selector=ours)
        self.secrets = Reflector("secrets", lambda **kw: self.core.list_namespaced_secret(ns, **kw),
                                 index_label=LABEL_ENDPOINT, label_selector=ours)
        self.services = Reflector("services", lambda **kw: self.core.list_namespaced_service(ns, **kw),
                                  index_label=LABEL_ENDPOINT, label_selector=ours)
        self.events = Reflector("events", lambda **kw: self.core.list_namespaced_event(ns, **kw),
                                field_selector="type=Warning")
        self.nodes = Reflector("nodes", lambda **kw: self.core.list_node(**kw))
        self._namespaced = (self.deployments, self.pods, self.secrets, self.services, self.events)
        self._nodes_started = False

    # --- construction ----------------------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: Settings) -> KubernetesProvider:
        try:
            api_client = api_client_from_settings(settings)
        except (ConfigException, OSError) as exc:
            raise ProviderPermanentError(f"no usable Kubernetes configuration (KUBECONFIG or in-cluster): {exc}") from exc
        return cls(api_client, options_from_settings(settings), field_manager=settings.k8s_field_manager,
                   verify_through_gateway=settings.k8s_verify_through_gateway)

    def start(self) -> None:
        """Start the watches (lazily: Celery forks workers, and threads do not survive a fork)."""
        with self._start_lock:
            if self._started:
                return
            if self._create_namespace:
                self._ensure_namespace()
            for reflector in self._namespaced:
                reflector.start()
            self._started = True

    def close(self) -> None:
        for reflector in (*self._namespaced, self.nodes):
            reflector.stop()
        self.api_client.close()

    def _ensure_namespace(self) -> None:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}}
        try:
            self.core.create_namespace(body, _preload_content=False)
        except ApiException as exc:
            if exc.status not in (403, 409):  # exists, or a namespaced role may not create namespaces: fine
                raise _translate(exc, f"creating namespace {self.namespace}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise _translate(exc, f"creating namespace {self.namespace}") from exc

    def _synced(self, *reflectors: Reflector) -> None:
        self.start()
        end = time.monotonic() + self.sync_timeout
        for reflector in reflectors:
            while not reflector.wait_synced(min(0.5, max(0.0, end - time.monotonic()))):
                if reflector.last_status in (401, 403) or time.monotonic() >= end:
                    raise ProviderTemporaryError(
                        f"the {reflector.name} cache has not synced with the API server "
                        f"({reflector.last_error or 'no answer'})", delay=30.0 if reflector.last_status else 5.0)

    # --- Provider protocol -----------------------------------------------------------------------------
    def observe(self, key: str) -> ObservedDeployment:
        self._synced(self.deployments, self.pods, self.events)
        return status_map.observe(deployment=self.deployments.get(key), pods=self.pods.by_index(key),
                                  warnings=self.events.items(), service_url=service_url(key, self.namespace))

    def render(self, desired: DesiredDeployment) -> Manifests:
        return render(desired, self.options)

    def apply(self, desired: DesiredDeployment, *, dry_run: bool = False) -> None:
        manifests = self.render(desired)
        if not dry_run:
            self._synced(self.deployments, self.secrets, self.services)
            if self._unchanged_since_applied(desired.key, manifests.applied_hash):
                return  # exactly this is in place and nobody touched it since: costs the API server nothing
        dep = self._apply("deployments", manifests.deployment, dry_run=dry_run)
        owner = owner_reference(dep) if dep["metadata"].get("uid") else None
        versions = []
        for kind, manifest in (("secrets", manifests.secret), ("services", manifests.service),
                               ("secrets", manifests.registry_secret)):
            if manifest is None:
                continue
            body = json.loads(json.dumps(manifest))
            if owner is not None:
                body["metadata"]["ownerReferences"] = [owner]
            versions.append(self._apply(kind, body, dry_run=dry_run)["metadata"].get("resourceVersion"))
        if manifests.registry_secret is None and not dry_run:
            self._delete_registry_secret(desired.key)  # credentials removed by an update: their pull secret goes
            versions.append(None)
        if not dry_run:
            with self._start_lock:
                self._applied[desired.key] = (manifests.applied_hash, dep["metadata"].get("generation"), *versions)

    def _unchanged_since_applied(self, key: str, applied_hash: str) -> bool:
        """True if our last apply of `key` had this content and the cache shows nobody changed the objects since.

        The Deployment's generation moves with any spec change (a `kubectl scale`, an edit), the Secret's and
        Service's resourceVersion with any change at all; so drift is repaired on the next pass, while a resync of
        unchanged endpoints sends nothing. After a restart the first pass re-applies once (nothing remembered).
        """
        with self._start_lock:
            remembered = self._applied.get(key)
        dep, secret, service = self.deployments.get(key), self.secrets.get(key), self.services.get(key)
        if remembered is None or dep is None or secret is None or service is None:
            return False
        if dep["metadata"].get("deletionTimestamp"):
            return False
        registry = self.secrets.get(registry_secret_name(key))
        current = ((dep["metadata"].get("annotations") or {}).get(ANNOTATION_APPLIED), dep["metadata"].get("generation"),
                   secret["metadata"].get("resourceVersion"), service["metadata"].get("resourceVersion"),
                   registry["metadata"].get("resourceVersion") if registry else None)
        return remembered == current and remembered[0] == applied_hash

    def _apply(self, kind: str, body: dict, *, dry_run: bool) -> dict:
        name = body["metadata"]["name"]
        fn = {"deployments": self.apps.patch_namespaced_deployment, "secrets": self.core.patch_namespaced_secret,
              "services": self.core.patch_namespaced_service}[kind]
        kwargs = {"field_manager": self.field_manager, "force": True, "_content_type": APPLY_CONTENT_TYPE,
                  "_preload_content": False}
        if dry_run:
            kwargs["dry_run"] = "All"
        try:
            resp = fn(name, self.namespace, body, **kwargs)
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            raise _translate(exc, f"applying {kind}/{name}") from exc
        obj = json.loads(resp.data)
        if not dry_run:
            {"deployments": self.deployments, "secrets": self.secrets, "services": self.services}[kind].upsert(obj)
        return obj

    def delete(self, key: str) -> None:
        self.start()
        # The Deployment owns the rest, but delete all three: an apply interrupted before the owner references
        # were set must not leak a Secret.
        for what, fn, reflector in (("deployments", self.apps.delete_namespaced_deployment, self.deployments),
                                    ("services", self.core.delete_namespaced_service, self.services),
                                    ("secrets", self.core.delete_namespaced_secret, self.secrets)):
            self._delete(what, fn, reflector, key)
        # Owner references would collect the registry pull secret with the Deployment; this covers an apply that
        # was interrupted before they were set.
        self._synced(self.secrets)
        self._delete_registry_secret(key)
        with self._start_lock:
            self._applied.pop(key, None)

    def _delete_registry_secret(self, key: str) -> None:
        """Custom images with credentials only have one; the (synced) cache says whether to send a request."""
        if self.secrets.get(registry_secret_name(key)) is not None:
            self._delete("secrets", self.core.delete_namespaced_secret, self.secrets, registry_secret_name(key))

    def _delete(self, what: str, fn, reflector: Reflector, name: str) -> None:
        try:
            fn(name, self.namespace, body=k8s.V1DeleteOptions(propagation_policy="Background"), _preload_content=False)
        except ApiException as exc:
            if exc.status != 404:
                raise _translate(exc, f"deleting {what}/{name}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise _translate(exc, f"deleting {what}/{name}") from exc
        reflector.forget(name)

    def logs(self, key: str, *, tail: int = 200, follow: bool = False) -> Iterator[str]:
        self._synced(self.pods)
        try:
            yield from self._log_reader.pod_logs(self.pods.by_index(key), tail=tail, follow=follow)
        except LogReadError as exc:
            raise _translate(exc.__cause__ or exc, f"reading logs of {key}") from exc

    def spec_notices(self, desired: DesiredDeployment) -> list[SpecNotice]:
        """The cluster runs the image, the hardware and the env as the spec says."""
        return []

    def engine(self, desired: DesiredDeployment) -> str:
        return engine_for(desired, self.options).describe()

    def list_keys(self) -> list[str]:
        self._synced(self.deployments, self.pods, self.secrets, self.services)
        keys: set[str] = set()
        for reflector in (self.deployments, self.pods, self.secrets, self.services):
            for obj in reflector.items():
                value = (obj["metadata"].get("labels") or {}).get(LABEL_ENDPOINT)
                if value:
                    keys.add(value)
        return sorted(keys)

    # --- capacity for the catalog -----------------------------------------------------------------------
    def gpu_capacity(self) -> list[PoolCapacity]:
        """Allocatable and used `nvidia.com/gpu` per instance type, from the node and pod caches.

        Needs list/watch on nodes (a ClusterRole; see the chart's rbac.yaml). Without it this raises
        `ProviderTemporaryError` and the catalog keeps its static figures.
        """
        if not self._nodes_started:
            self.nodes.start()
            self._nodes_started = True
        self._synced(self.pods, self.nodes)
        used_by_node: dict[str, int] = {}
        for pod in self.pods.items():
            node = (pod.get("spec") or {}).get("nodeName")
            phase = (pod.get("status") or {}).get("phase")
            if not node or phase in ("Succeeded", "Failed"):
                continue
            for c in (pod.get("spec") or {}).get("containers") or []:
                gpus = ((c.get("resources") or {}).get("limits") or {}).get(GPU_RESOURCE)
                if gpus:
                    used_by_node[node] = used_by_node.get(node, 0) + int(gpus)
        pools: dict[tuple[str, str | None], list[int]] = {}
        for node in self.nodes.items():
            alloc = ((node.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE)
            if not alloc:
                continue
            labels = node["metadata"].get("labels") or {}
            key = (labels.get("node.kubernetes.io/instance-type", "unknown"), labels.get("nvidia.com/gpu.product"))
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in (node.get("status") or {}).get("conditions") or [])
            unschedulable = bool((node.get("spec") or {}).get("unschedulable"))
            entry = pools.setdefault(key, [0, 0, 0, 0, 0, 0])
            used_here = used_by_node.get(node["metadata"]["name"], 0)
            entry[0] += 1
            if ready and not unschedulable:
                entry[1] += 1
                entry[2] += int(alloc)
                entry[4] = max(entry[4], int(alloc))
                entry[5] = max(entry[5], int(alloc) - used_here)
            entry[3] += used_here
        return [PoolCapacity(instance_type=k[0], gpu_product=k[1], nodes=v[0], ready_nodes=v[1],
                             allocatable_gpus=v[2], used_gpus=v[3], max_allocatable_per_node=v[4],
                             max_free_per_node=v[5]) for k, v in sorted(pools.items(), key=str)]

    def accelerator_usage(self) -> dict[str, dict[str, int]]:
        """`{instance_type: {"allocatable": n, "used": m}}` over Ready GPU nodes, keyed by the nodes'
        `node.kubernetes.io/instance-type` label: what the catalog's quota (`usedAccelerators`) and instance
        `status` need when the cluster's instance-type labels are the catalog's instance types."""
        usage: dict[str, dict[str, int]] = {}
        for pool in self.gpu_capacity():
            entry = usage.setdefault(pool.instance_type, {"allocatable": 0, "used": 0, "max_allocatable_per_node": 0,
                                                          "max_free_per_node": 0})
            entry["allocatable"] += pool.allocatable_gpus
            entry["used"] += pool.used_gpus
            entry["max_allocatable_per_node"] = max(entry["max_allocatable_per_node"], pool.max_allocatable_per_node)
            entry["max_free_per_node"] = max(entry["max_free_per_node"], pool.max_free_per_node)
        return usage

    # --- helpers for tests and benchmarks ---------------------------------------------------------------
    def wait_until(self, predicate, timeout: float = 60.0) -> bool:  # noqa: ANN001
        """Poll `predicate()` against the caches (woken by pod and deployment changes) until true or timeout."""
        self.start()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            self.pods.wait_for(predicate, timeout=min(1.0, max(0.0, end - time.monotonic())))
        return bool(predicate())


def options_from_settings(settings: Settings) -> RenderOptions:
    return RenderOptions(
        namespace=settings.k8s_namespace,
        runtime_image=settings.k8s_runtime_image,
        downloader_image=settings.k8s_downloader_image,
        image_pull_secrets=tuple(settings.k8s_image_pull_secrets),
        image_pull_policy=settings.k8s_image_pull_policy,
        storage_class=settings.k8s_storage_class,
        model_cache_size=settings.k8s_model_cache_size,
        shm_size=settings.k8s_shm_size,
        extra_labels=dict(settings.k8s_extra_labels),
        extra_annotations=dict(settings.k8s_extra_annotations),
        tolerations=tuple(settings.k8s_tolerations),
        node_failure_toleration_seconds=settings.k8s_node_failure_toleration_seconds,
        startup_timeout_seconds=settings.k8s_startup_timeout_seconds,
        progress_deadline_seconds=settings.k8s_progress_deadline_seconds,
        resource_request_fraction=settings.k8s_resource_request_fraction,
        hub_token=settings.hub_token,
        hub_endpoint=settings.hub_endpoint,
        engine_images=dict(settings.k8s_engine_images),
        gguf_image=settings.gguf_image,
    )
