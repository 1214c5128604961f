"""Python SDK for an endpointctl control plane, with huggingface_hub's function signatures.

    from controlplane import create_inference_endpoint
    endpoint = create_inference_endpoint("my-llm", repository="gpt2", framework="pytorch", accelerator="cpu",
                                         instance_size="x1", instance_type="intel-icl", region="us-east-1",
                                         vendor="aws")
    endpoint.wait(timeout=600).openai_client().chat.completions.create(...)

Configured by `ENDPOINTCTL_URL` / `ENDPOINTCTL_TOKEN` or the `url=` / `token=` arguments. HTTP goes through
`controlplane.client.ControlPlaneClient` and bodies are built by `controlplane.bodies`, the same the CLI uses, so
the two cannot send different bodies for the same call. Needs no extra: `pip install endpointctl` is enough.
Errors:

    ControlPlaneError               (controlplane.client) anything the HTTP client raises
    ├── ControlPlaneUnreachable     no HTTP answer from the control plane
    ├── EndpointctlHTTPError        an error answer from the control plane (`status_code`, `message`)
    └── InvalidName                 also a ValueError: a name that cannot be a path segment
    InferenceEndpointError          the endpoint failed to deploy or update (a subclass of huggingface_hub's
    │                               when that is installed, so `except` clauses written for it still catch)
    └── InferenceEndpointTimeoutError   also a TimeoutError: `wait()` ran out of time
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx

from controlplane.bodies import create_body, update_body
from controlplane.client import DEFAULT_URL, ControlPlaneClient, ControlPlaneError, EndpointctlHTTPError

if TYPE_CHECKING:
    import openai
    from huggingface_hub import AsyncInferenceClient, InferenceClient

try:  # Ours derive from huggingface_hub's when it is installed, so code written against it catches ours too.
    from huggingface_hub.errors import InferenceEndpointError as _HubEndpointError
    from huggingface_hub.errors import InferenceEndpointTimeoutError as _HubTimeoutError
except ImportError:  # the bare install: nobody can be catching huggingface_hub's classes
    _HubEndpointError, _HubTimeoutError = Exception, TimeoutError


class InferenceEndpointError(_HubEndpointError):
    """The endpoint failed to deploy or update, or has no URL yet."""


class InferenceEndpointTimeoutError(InferenceEndpointError, _HubTimeoutError):
    """`wait()` ran out of time; also a TimeoutError."""


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


_clients: dict[tuple[str, str | None], ControlPlaneClient] = {}


def _client(url: str | None, token: str | None) -> ControlPlaneClient:
    """One client (one connection pool) per resolved (url, token), reused across module-level calls."""
    resolved = ((url or os.environ.get("ENDPOINTCTL_URL") or DEFAULT_URL).rstrip("/"),
                token if token is not None else os.environ.get("ENDPOINTCTL_TOKEN"))
    client = _clients.get(resolved)
    if client is None:
        client = _clients[resolved] = ControlPlaneClient(*resolved)
    return client


def _namespace(api: ControlPlaneClient, namespace: str | None) -> str:
    return namespace or api.whoami()["name"]


def _hub_client(name: str) -> Any:
    """huggingface_hub's client class `name`; the SDK itself does not depend on huggingface_hub."""
    try:
        import huggingface_hub
    except ImportError as exc:
        raise ImportError(f"`endpoint.client` and `endpoint.async_client` are huggingface_hub's {name}: "
                          "pip install huggingface_hub (or use `endpoint.openai_client()`)") from exc
    return getattr(huggingface_hub, name)


@dataclass
class InferenceEndpoint:
    """An endpoint as last fetched; actions refresh it in place and return `self`, so calls chain."""

    namespace: str
    raw: dict[str, Any] = field(repr=False)
    _api: ControlPlaneClient = field(repr=False, compare=False)
    name: str = field(init=False)
    repository: str = field(init=False)
    status: str = field(init=False)
    health_route: str = field(init=False)
    url: str | None = field(init=False)
    framework: str = field(init=False, repr=False)
    revision: str | None = field(init=False, repr=False)
    task: str | None = field(init=False, repr=False)
    created_at: datetime = field(init=False, repr=False)
    updated_at: datetime = field(init=False, repr=False)
    type: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._populate()

    @property
    def _token(self) -> str | None:
        return self._api.token

    @property
    def message(self) -> str | None:
        return self.raw["status"].get("message")

    def _populate(self) -> None:
        raw = self.raw
        self.name = raw["name"]
        self.repository = raw["model"]["repository"]
        self.status = raw["status"]["state"]
        self.url = raw["status"].get("url")
        self.health_route = raw["healthRoute"]
        self.framework = raw["model"]["framework"]
        self.revision = raw["model"]["revision"]
        self.task = raw["model"]["task"]
        self.created_at = _parse_time(raw["status"]["createdAt"])
        self.updated_at = _parse_time(raw["status"]["updatedAt"])
        self.type = raw["type"]

    def _replace(self, raw: dict[str, Any]) -> InferenceEndpoint:
        self.raw = raw
        self._populate()
        return self

    # --- clients -------------------------------------------------------------------------------------------
    def _require_url(self) -> str:
        if self.url is None:
            raise InferenceEndpointError(
                f"Inference Endpoint {self.name} has no URL yet ({self.status}); wait for it with `endpoint.wait()`.")
        return self.url

    @property
    def client(self) -> InferenceClient:
        return _hub_client("InferenceClient")(model=self._require_url(), token=self._token)

    @property
    def async_client(self) -> AsyncInferenceClient:
        return _hub_client("AsyncInferenceClient")(model=self._require_url(), token=self._token)

    def openai_client(self, **kwargs: Any) -> openai.OpenAI:
        """An OpenAI SDK client for the endpoint's OpenAI-compatible routes."""
        import openai

        return openai.OpenAI(base_url=self._require_url().rstrip("/") + "/v1/", api_key=self._token or "none",
                             **kwargs)

    # --- actions -------------------------------------------------------------------------------------------
    def wait(self, timeout: int | float | None = None, refresh_every: int | float = 5) -> InferenceEndpoint:
        """Poll until running and the health route answers 200; raises on failed/updateFailed or timeout."""
        if timeout is not None and timeout < 0:
            raise ValueError("`timeout` cannot be negative.")
        if refresh_every <= 0:
            raise ValueError("`refresh_every` must be positive.")
        start = time.monotonic()
        while True:
            if self.status == "failed":
                raise InferenceEndpointError(f"Inference Endpoint {self.name} failed to deploy: {self.message}")
            if self.status == "updateFailed":
                raise InferenceEndpointError(f"Inference Endpoint {self.name} failed to update: {self.message}")
            if self.status == "running" and self.url is not None:
                health = f"{self.url.rstrip('/')}/{self.health_route.lstrip('/')}"
                try:
                    if httpx.get(health, headers=self._api.headers(), timeout=10).status_code == 200:
                        return self
                except httpx.TransportError:
                    pass  # published but not reachable yet: keep polling
            if timeout is not None and time.monotonic() - start > timeout:
                raise InferenceEndpointTimeoutError(
                    f"Timeout while waiting for Inference Endpoint {self.name} to be deployed ({self.status}).")
            time.sleep(refresh_every)
            self.fetch()

    def fetch(self) -> InferenceEndpoint:
        return self._replace(self._api.get_endpoint(self.namespace, self.name))

    def update(self, *, accelerator: str | None = None, instance_size: str | None = None,
               instance_type: str | None = None, min_replica: int | None = None, max_replica: int | None = None,
               scale_to_zero_timeout: int | None = None, repository: str | None = None, framework: str | None = None,
               revision: str | None = None, task: str | None = None, custom_image: dict | None = None,
               container_command: list[str] | None = None, container_args: list[str] | None = None,
               tensor_parallel_size: int | None = None, data_parallel_size: int | None = None,
               env: dict[str, str] | None = None, secrets: dict[str, str] | None = None,
               scaling_metric: str | None = None, scaling_threshold: float | None = None,
               domain: str | None = None, path: str | None = None, cache_http_responses: bool | None = None,
               tags: list[str] | None = None) -> InferenceEndpoint:
        changes = {k: v for k, v in locals().items() if k != "self"}
        body = update_body(**changes, current_image=self.raw["model"].get("image"))
        return self._replace(self._api.update_endpoint(self.namespace, self.name, body))

    def pause(self) -> InferenceEndpoint:
        return self._replace(self._api.action(self.namespace, self.name, "pause"))

    def resume(self, running_ok: bool = True) -> InferenceEndpoint:
        try:
            return self._replace(self._api.action(self.namespace, self.name, "resume"))
        except EndpointctlHTTPError as exc:
            if running_ok and exc.status_code == 400 and "already running" in exc.message:
                return self.fetch()
            raise

    def scale_to_zero(self) -> InferenceEndpoint:
        return self._replace(self._api.action(self.namespace, self.name, "scale-to-zero"))

    def delete(self) -> None:
        self._api.delete_endpoint(self.namespace, self.name)

    def events(self, *, limit: int = 50) -> list[dict[str, Any]]:
        return self._api.events(self.namespace, self.name, limit=int(limit))["items"]


# --- module-level functions with huggingface_hub's signatures (plus `url=`) ------------------------------------
def create_inference_endpoint(
    name: str, *, repository: str, framework: str, accelerator: str, instance_size: str, instance_type: str,
    region: str, vendor: str, account_id: str | None = None, private_link_account_id: str | None = None,
    private_link_region: str | None = None, min_replica: int = 1, max_replica: int = 1,
    scaling_metric: str | None = None, scaling_threshold: float | None = None,
    scale_to_zero_timeout: int | None = None, revision: str | None = None, task: str | None = None,
    custom_image: dict | None = None, container_registry_username: str | None = None,
    container_registry_password: str | None = None, container_command: list[str] | None = None,
    container_args: list[str] | None = None, env: dict[str, str] | None = None,
    secrets: dict[str, str] | None = None, type: str = "authenticated", domain: str | None = None,
    path: str | None = None, cache_http_responses: bool | None = None, tags: list[str] | None = None,
    namespace: str | None = None, token: str | None = None, url: str | None = None,
) -> InferenceEndpoint:
    """Create an endpoint (it starts `pending`; `.wait()` for it). `type="protected"` is accepted as
    `authenticated`; `account_id` is ignored, as in huggingface_hub."""
    body = create_body(
        name, repository=repository, framework=framework, accelerator=accelerator, instance_size=instance_size,
        instance_type=instance_type, region=region, vendor=vendor, private_link_account_id=private_link_account_id,
        private_link_region=private_link_region, min_replica=min_replica, max_replica=max_replica,
        scaling_metric=scaling_metric, scaling_threshold=scaling_threshold,
        scale_to_zero_timeout=scale_to_zero_timeout, revision=revision, task=task, custom_image=custom_image,
        container_registry_username=container_registry_username,
        container_registry_password=container_registry_password, container_command=container_command,
        container_args=container_args, env=env, secrets=secrets, type=type, domain=domain, path=path,
        cache_http_responses=cache_http_responses, tags=tags)
    api = _client(url, token)
    namespace = _namespace(api, namespace)
    return InferenceEndpoint(namespace, api.create_endpoint(namespace, body), api)


def get_inference_endpoint(name: str, *, namespace: str | None = None, token: str | None = None,
                           url: str | None = None) -> InferenceEndpoint:
    api = _client(url, token)
    namespace = _namespace(api, namespace)
    return InferenceEndpoint(namespace, api.get_endpoint(namespace, name), api)


def list_inference_endpoints(namespace: str | None = None, *, token: str | None = None,
                             url: str | None = None) -> list[InferenceEndpoint]:
    """Endpoints of one namespace, or with `namespace="*"` of the caller's namespace and all its organisations."""
    api = _client(url, token)
    if namespace == "*":
        me = api.whoami()
        namespaces = [me["name"], *(org["name"] for org in me.get("orgs", []))]
    else:
        namespaces = [_namespace(api, namespace)]
    out: list[InferenceEndpoint] = []
    for ns in namespaces:
        out += [InferenceEndpoint(ns, raw, api) for raw in api.list_endpoints(ns)]
    return out


def update_inference_endpoint(name: str, *, namespace: str | None = None, token: str | None = None,
                              url: str | None = None, **changes: Any) -> InferenceEndpoint:
    return get_inference_endpoint(name, namespace=namespace, token=token, url=url).update(**changes)


def pause_inference_endpoint(name: str, *, namespace: str | None = None, token: str | None = None,
                             url: str | None = None) -> InferenceEndpoint:
    return get_inference_endpoint(name, namespace=namespace, token=token, url=url).pause()


def resume_inference_endpoint(name: str, *, namespace: str | None = None, running_ok: bool = True,
                              token: str | None = None, url: str | None = None) -> InferenceEndpoint:
    return get_inference_endpoint(name, namespace=namespace, token=token, url=url).resume(running_ok=running_ok)


def scale_to_zero_inference_endpoint(name: str, *, namespace: str | None = None, token: str | None = None,
                                     url: str | None = None) -> InferenceEndpoint:
    return get_inference_endpoint(name, namespace=namespace, token=token, url=url).scale_to_zero()


def delete_inference_endpoint(name: str, *, namespace: str | None = None, token: str | None = None,
                              url: str | None = None) -> None:
    api = _client(url, token)
    api.delete_endpoint(_namespace(api, namespace), name)


__all__ = ["ControlPlaneClient", "ControlPlaneError", "EndpointctlHTTPError", "InferenceEndpoint",
           "InferenceEndpointError", "InferenceEndpointTimeoutError", "create_inference_endpoint",
           "delete_inference_endpoint", "get_inference_endpoint", "list_inference_endpoints",
           "pause_inference_endpoint", "resume_inference_endpoint", "scale_to_zero_inference_endpoint",
           "update_inference_endpoint"]
