"""Replica logs on Kubernetes with two requests and no watch: list the endpoint's pods, then stream each one's
runtime container log. Exactly the rights of the chart's API Role (pods list/get, pods/log get), so the API pods
never hold the worker's write-capable ServiceAccount. The provider reads logs through `pod_logs` too, with the pods
of its own cache instead of a list call.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from common.config import Settings
from common.kube_names import RUNTIME_CONTAINER, endpoint_selector
from common.logreader import LogReadError

USER_AGENT = "endpointctl-log-reader/0.1"


def api_client_from_settings(settings: Settings) -> k8s.ApiClient:
    """A client from KUBECONFIG (and its context) when set, else the pod's in-cluster ServiceAccount, else the default
    kubeconfig. Raises `ConfigException` or `OSError` when none is usable."""
    if settings.kubeconfig:
        return k8s_config.new_client_from_config(config_file=str(settings.kubeconfig), context=settings.k8s_context)
    try:
        configuration = k8s.Configuration()
        k8s_config.load_incluster_config(client_configuration=configuration)
        return k8s.ApiClient(configuration)
    except ConfigException:
        return k8s_config.new_client_from_config(context=settings.k8s_context)


class KubernetesLogReader:
    def __init__(self, api_client: k8s.ApiClient, namespace: str) -> None:
        self.core = k8s.CoreV1Api(api_client)
        self.namespace = namespace

    @classmethod
    def from_settings(cls, settings: Settings) -> KubernetesLogReader:
        try:
            api_client = api_client_from_settings(settings)
        except (ConfigException, OSError) as exc:
            raise LogReadError(f"no usable Kubernetes configuration (KUBECONFIG or in-cluster): {exc}") from exc
        api_client.user_agent = USER_AGENT
        return cls(api_client, settings.k8s_namespace)

    def pods(self, key: str) -> list[dict]:
        """The endpoint's pods, as the API server's JSON (one list request)."""
        try:
            resp = self.core.list_namespaced_pod(self.namespace, label_selector=endpoint_selector(key),
                                                 _preload_content=False)
            return json.loads(resp.data).get("items") or []
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            raise LogReadError(f"listing the pods of {key}: {_detail(exc)}") from exc

    def logs(self, key: str, *, tail: int = 200, follow: bool = False, replica: str | None = None,
             since_seconds: int | None = None) -> Iterator[str]:
        pods = self.pods(key)
        if replica is not None:
            chosen = [p for p in pods if p["metadata"]["name"] == replica]
            if not chosen:
                from common.logreader import NoSuchReplica

                names = ", ".join(p["metadata"]["name"] for p in pods) or "none"
                raise NoSuchReplica(f"no replica {replica!r} (replicas: {names})")
            pods = chosen
        return self.pod_logs(pods, tail=tail, follow=follow, since_seconds=since_seconds)

    def pod_logs(self, pods: Iterable[dict], *, tail: int = 200, follow: bool = False,
                 since_seconds: int | None = None) -> Iterator[str]:
        """Each pod's runtime container log in turn, oldest pod first, every line prefixed with its pod's name.
        A pod whose container has not started yet, or that is gone, is skipped."""
        for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or ""):
            name = pod["metadata"]["name"]
            try:
                extra = {"since_seconds": since_seconds} if since_seconds is not None else {}
                resp = self.core.read_namespaced_pod_log(name, self.namespace, container=RUNTIME_CONTAINER,
                                                         tail_lines=tail, follow=follow, _preload_content=False,
                                                         **extra)
            except ApiException as exc:
                if exc.status in (400, 404):
                    continue
                raise LogReadError(f"reading logs of {name}: {_detail(exc)}") from exc
            except urllib3.exceptions.HTTPError as exc:
                raise LogReadError(f"reading logs of {name}: {_detail(exc)}") from exc
            try:
                buffer = b""
                for chunk in resp.stream(4096):
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        yield f"[{name}] {line.decode(errors='replace')}"
                if buffer:
                    yield f"[{name}] {buffer.decode(errors='replace')}"
            finally:
                resp.release_conn()


def _detail(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return f"Kubernetes API unreachable: {exc}"
