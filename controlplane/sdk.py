"""Python SDK for an endpointctl control plane, with huggingface_hub's function signatures.

    from controlplane import create_inference_endpoint
    endpoint = create_inference_endpoint("my-llm", repository="gpt2", framework="pytorch", accelerator="cpu",
                                         instance_size="x1", instance_type="intel-icl", region="us-east-1",
                                         vendor="aws")
    endpoint.wait(timeout=600).openai_client().chat.completions.create(...)

Configured by `ENDPOINTCTL_URL` / `ENDPOINTCTL_TOKEN` or the `url=` / `token=` arguments. Errors:

    EndpointctlHTTPError            an error answer from the control plane (`status_code`, `message`)
    InferenceEndpointError          (huggingface_hub's) the endpoint failed to deploy or update
    └── InferenceEndpointTimeoutError   also a TimeoutError: `wait()` ran out of time
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
from huggingface_hub.errors import InferenceEndpointError, InferenceEndpointTimeoutError

if TYPE_CHECKING:
    import openai
    from huggingface_hub import AsyncInferenceClient, InferenceClient

DEFAULT_URL = "http://127.0.0.1:8000"


class EndpointctlHTTPError(Exception):
    """The control plane answered with an error; `message` is its `error` string."""

    def __init__(self, status_code: int, message: str, *, response: httpx.Response | None = None) -> None:
        super().__init__(f"{status_code}: {message}")
        self.status_code = status_code
        self.message = message
        self.response = response


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class ControlPlaneClient:
    """A thin HTTP client for the v2 API; one per (url, token)."""

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 30.0) -> None:
        self.url = (url or os.environ.get("ENDPOINTCTL_URL") or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else os.environ.get("ENDPOINTCTL_TOKEN")
        self._http = httpx.Client(timeout=timeout)

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token else {}

    def request(self, method: str, path: str, *, json: Any = None) -> Any:
        response = self._http.request(method, self.url + path, json=json, headers=self.headers())
        if response.status_code >= 400:
            try:
                message = str(response.json().get("error") or response.text)
            except ValueError:
                message = response.text
            raise EndpointctlHTTPError(response.status_code, message, response=response)
        return response.json() if response.content else None

    def whoami(self) -> dict[str, Any]:
        return self.request("GET", "/api/whoami-v2")

    def namespace(self, namespace: str | None) -> str:
        return namespace or self.whoami()["name"]

    def close(self) -> None:
        self._http.close()


_clients: dict[tuple[str, str | None], ControlPlaneClient] = {}


def _client(url: str | None, token: str | None) -> ControlPlaneClient:
    """One client (one connection pool) per resolved (url, token), reused across module-level calls."""
    resolved = ((url or os.environ.get("ENDPOINTCTL_URL") or DEFAULT_URL).rstrip("/"),
                token if token is not None else os.environ.get("ENDPOINTCTL_TOKEN"))
    client = _clients.get(resolved)
    if client is None:
        client = _clients[resolved] = ControlPlaneClient(*resolved)
    return client


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

    def _path(self, suffix: str = "") -> str:
        return f"/v2/endpoint/{self.namespace}/{self.name}{suffix}"

    # --- clients -------------------------------------------------------------------------------------------
    def _require_url(self) -> str:
        if self.url is None:
            raise InferenceEndpointError(
                f"Inference Endpoint {self.name} has no URL yet ({self.status}); wait for it with `endpoint.wait()`.")
        return self.url

    @property
    def client(self) -> InferenceClient:
        from huggingface_hub import InferenceClient

        return InferenceClient(model=self._require_url(), token=self._token)

    @property
    def async_client(self) -> AsyncInferenceClient:
        from huggingface_hub import AsyncInferenceClient

        return AsyncInferenceClient(model=self._require_url(), token=self._token)

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
        return self._replace(self._api.request("GET", self._path()))

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
        payload = _update_payload(**{k: v for k, v in locals().items() if k != "self"}, current=self.raw)
        return self._replace(self._api.request("PUT", self._path(), json=payload))

    def pause(self) -> InferenceEndpoint:
        return self._replace(self._api.request("POST", self._path("/pause")))

    def resume(self, running_ok: bool = True) -> InferenceEndpoint:
        try:
            return self._replace(self._api.request("POST", self._path("/resume")))
        except EndpointctlHTTPError as exc:
            if running_ok and exc.status_code == 400 and "already running" in exc.message:
                return self.fetch()
            raise

    def scale_to_zero(self) -> InferenceEndpoint:
        return self._replace(self._api.request("POST", self._path("/scale-to-zero")))

    def delete(self) -> None:
        self._api.request("DELETE", self._path())

    def events(self, *, limit: int = 50) -> list[dict[str, Any]]:
        return self._api.request("GET", self._path(f"/events?limit={int(limit)}"))["items"]


def _image(custom_image: dict, username: str | None = None, password: str | None = None) -> dict:
    image = {"custom": dict(custom_image)} if "url" in custom_image else dict(custom_image)
    if password is not None and username is None:
        raise ValueError("`container_registry_password` requires `container_registry_username`.")
    if username is not None:
        if not isinstance(image.get("custom"), dict):
            raise ValueError("Container registry credentials can only be set for a custom container image.")
        creds = {"username": username, **({"password": password} if password is not None else {})}
        image["custom"] = {**image["custom"], "credentials": creds}
    return image


def _update_payload(*, current: dict[str, Any], **kw: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {}

    def put(section: str, key: str, value: Any, sub: str | None = None) -> None:
        if value is None:
            return
        target = payload.setdefault(section, {})
        if sub:
            target = target.setdefault(sub, {})
        target[key] = value

    put("compute", "accelerator", kw["accelerator"])
    put("compute", "instanceSize", kw["instance_size"])
    put("compute", "instanceType", kw["instance_type"])
    put("compute", "maxReplica", kw["max_replica"], "scaling")
    put("compute", "minReplica", kw["min_replica"], "scaling")
    put("compute", "scaleToZeroTimeout", kw["scale_to_zero_timeout"], "scaling")
    if kw["scaling_metric"]:
        put("compute", "measure", {kw["scaling_metric"]: kw["scaling_threshold"]}, "scaling")
    for key in ("repository", "framework", "revision", "task", "env", "secrets"):
        put("model", key, kw[key])
    put("model", "command", kw["container_command"])
    put("model", "args", kw["container_args"])
    if kw["custom_image"] is not None:
        put("model", "image", _image(kw["custom_image"]))
    if kw["tensor_parallel_size"] is not None or kw["data_parallel_size"] is not None:
        image = payload.get("model", {}).get("image") or current["model"]["image"]
        (variant, body), = image.items()
        body = dict(body)
        if kw["tensor_parallel_size"] is not None:
            body["tensorParallelSize"] = kw["tensor_parallel_size"]
        if kw["data_parallel_size"] is not None:
            body["dataParallelSize"] = kw["data_parallel_size"]
        put("model", "image", {variant: body})
    put("route", "domain", kw["domain"])
    put("route", "path", kw["path"])
    if kw["cache_http_responses"] is not None:
        payload["cacheHttpResponses"] = kw["cache_http_responses"]
    if kw["tags"] is not None:
        payload["tags"] = kw["tags"]
    return payload


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
    api = _client(url, token)
    namespace = api.namespace(namespace)
    if custom_image is None:
        if container_registry_username is not None or container_registry_password is not None:
            raise ValueError("`custom_image` is required when setting container registry credentials.")
        image: dict[str, Any] = {"huggingface": {}}
    else:
        image = _image(custom_image, container_registry_username, container_registry_password)
    payload: dict[str, Any] = {
        "compute": {"accelerator": accelerator, "instanceSize": instance_size, "instanceType": instance_type,
                    "scaling": {"maxReplica": max_replica, "minReplica": min_replica,
                                "scaleToZeroTimeout": scale_to_zero_timeout}},
        "model": {"framework": framework, "repository": repository, "revision": revision, "image": image},
        "name": name, "provider": {"region": region, "vendor": vendor}, "type": str(type),
    }
    if private_link_account_id is not None:
        payload["privateService"] = {"accountId": private_link_account_id, "region": private_link_region}
    if scaling_metric:
        payload["compute"]["scaling"]["measure"] = {str(scaling_metric): scaling_threshold}
    model = payload["model"]
    if task is not None:
        model["task"] = task
    if container_command is not None:
        model["command"] = container_command
    if container_args is not None:
        model["args"] = container_args
    if env:
        model["env"] = env
    if secrets:
        model["secrets"] = secrets
    if domain is not None or path is not None:
        payload["route"] = {k: v for k, v in (("domain", domain), ("path", path)) if v is not None}
    if cache_http_responses is not None:
        payload["cacheHttpResponses"] = cache_http_responses
    if tags is not None:
        payload["tags"] = tags
    return InferenceEndpoint(namespace, api.request("POST", f"/v2/endpoint/{namespace}", json=payload), api)


def get_inference_endpoint(name: str, *, namespace: str | None = None, token: str | None = None,
                           url: str | None = None) -> InferenceEndpoint:
    api = _client(url, token)
    namespace = api.namespace(namespace)
    return InferenceEndpoint(namespace, api.request("GET", f"/v2/endpoint/{namespace}/{name}"), api)


def list_inference_endpoints(namespace: str | None = None, *, token: str | None = None,
                             url: str | None = None) -> list[InferenceEndpoint]:
    """Endpoints of one namespace, or with `namespace="*"` of the caller's namespace and all its organisations."""
    api = _client(url, token)
    if namespace == "*":
        me = api.whoami()
        namespaces = [me["name"], *(org["name"] for org in me.get("orgs", []))]
    else:
        namespaces = [api.namespace(namespace)]
    out: list[InferenceEndpoint] = []
    for ns in namespaces:
        out += [InferenceEndpoint(ns, raw, api) for raw in api.request("GET", f"/v2/endpoint/{ns}")["items"]]
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
    namespace = api.namespace(namespace)
    api.request("DELETE", f"/v2/endpoint/{namespace}/{name}")


__all__ = ["ControlPlaneClient", "EndpointctlHTTPError", "InferenceEndpoint", "InferenceEndpointError",
           "InferenceEndpointTimeoutError", "create_inference_endpoint", "delete_inference_endpoint",
           "get_inference_endpoint", "list_inference_endpoints", "pause_inference_endpoint",
           "resume_inference_endpoint", "scale_to_zero_inference_endpoint", "update_inference_endpoint"]
