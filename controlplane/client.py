"""The one HTTP client of the control plane's v2 API, shared by the Python SDK (`controlplane.sdk`) and the CLI.

It owns the boundary between HTTP and its callers: httpx's exceptions never leave it. It imports httpx and the
standard library only, so `pip install endpointctl` without an extra can use it. Errors:

    ControlPlaneError               anything this client raises
    ├── ControlPlaneUnreachable     no HTTP answer: refused, unresolvable, TLS, timed out, or a URL that is not one
    ├── EndpointctlHTTPError        an error status; `status_code` and the server's own `message`
    └── InvalidName                 also a ValueError: a name or namespace that cannot be one path segment

The API's error bodies hold an `error` string; FastAPI's `detail`, the OpenAI envelope and huggingface_hub's
`X-Error-Message` header are read too, so a proxy or another server in front still gives a readable message.

httpx is imported when a client is built, not with this module: the CLI imports the error types at start-up, and
httpx is the larger part of a verb's start when the verb (`--help`) never talks to the API.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


def _user_agent() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"endpointctl/{version('endpointctl')}"
    except PackageNotFoundError:
        return "endpointctl"


class ControlPlaneError(Exception):
    """Base of what `ControlPlaneClient` raises; `message` is one line a person can act on."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ControlPlaneUnreachable(ControlPlaneError):
    """No HTTP answer at all from the control plane."""


class EndpointctlHTTPError(ControlPlaneError):
    """The control plane answered with an error status; `message` is its explanation (its `error` string)."""

    def __init__(self, status_code: int, message: str, *, response: httpx.Response | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.response = response

    def __str__(self) -> str:
        return f"{self.status_code}: {self.message}"


class InvalidName(ControlPlaneError, ValueError):
    """A name or namespace that cannot be sent as one path segment."""


def _segment(value: str) -> str:
    """Quote one path segment, so a name with '/' or '?' cannot address another route."""
    if not value or value in (".", "..") or "/" in value:
        raise InvalidName(f"invalid name {value!r}: names and namespaces cannot be empty, '.', '..' or contain '/'")
    return quote(value, safe="")


def error_message(response: httpx.Response) -> str:
    """The server's explanation of an error response, as one line."""
    header = response.headers.get("x-error-message")
    if header:
        return header
    try:
        body = response.json()
    except ValueError:
        body = None
    message: str | None = None
    if isinstance(body, dict):
        for key in ("error", "message", "detail", "error_description"):
            value = body.get(key)
            if isinstance(value, str) and value:
                message = value
                break
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                message = value["message"]  # the OpenAI error envelope
                break
            if isinstance(value, list) and value:
                # FastAPI validation errors: [{"loc": [...], "msg": "..."}]; huggingface_hub: list of strings.
                parts = []
                for item in value:
                    if isinstance(item, dict):
                        loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                        parts.append(f"{loc}: {item.get('msg')}" if loc else str(item.get("msg")))
                    else:
                        parts.append(str(item))
                message = "; ".join(parts)
                break
    if not message:
        text = response.text.strip()
        if text and not response.headers.get("content-type", "").startswith("text/html"):
            message = text.splitlines()[0][:300]
        else:  # an HTML error page says nothing a terminal line can show
            message = f"HTTP {response.status_code} {response.reason_phrase}".strip()
    return " ".join(message.split())


def _from_our_api(response: httpx.Response) -> bool:
    """Our API's errors always carry an `error` string; anything else came from a router, proxy or other server."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), str)


def _clean(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


class ControlPlaneClient:
    """Typed calls to the v2 API; one per (url, token), holding one connection pool.

    Every method returns decoded JSON or raises a `ControlPlaneError`.
    """

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, *, timeout: float = 30.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.token = token or None
        if not self.url.startswith(("http://", "https://")):
            raise ControlPlaneUnreachable(f"invalid control-plane URL {url!r}: it must start with http:// or https://")
        try:
            self._http = httpx.Client(base_url=self.url, headers={"user-agent": _user_agent(), **self.headers()},
                                      timeout=timeout)
        except httpx.InvalidURL as exc:
            raise ControlPlaneUnreachable(f"invalid control-plane URL {url!r}: {exc}") from exc

    def headers(self) -> dict[str, str]:
        """The authorization header, for requests that go elsewhere with the same token (an endpoint's URL)."""
        return {"authorization": f"Bearer {self.token}"} if self.token else {}

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ControlPlaneClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ------------------------------------------------------------------------------------------

    def _transport_error(self, exc: httpx.TransportError) -> ControlPlaneUnreachable:
        import httpx

        if isinstance(exc, httpx.TimeoutException):
            return ControlPlaneUnreachable(f"the control plane at {self.url} did not answer in time ({type(exc).__name__})")
        reason = str(exc) or type(exc).__name__
        return ControlPlaneUnreachable(f"cannot reach the control plane at {self.url}: {reason}")

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        import httpx

        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc
        except httpx.InvalidURL as exc:
            raise ControlPlaneUnreachable(f"invalid control-plane URL {self.url!r}: {exc}") from exc
        if response.status_code >= 400:
            message = error_message(response)
            if response.status_code in (404, 405) and not _from_our_api(response):
                # An unknown route: our API always names what is missing, so this is the wrong server (or URL).
                message = f"{method} {path}: {message} — is {self.url} an endpointctl control plane?"
            raise EndpointctlHTTPError(response.status_code, message, response=response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise EndpointctlHTTPError(
                response.status_code, f"the control plane sent a response that is not JSON ({method} {path})",
                response=response) from exc

    @staticmethod
    def _ep(namespace: str, name: str | None = None) -> str:
        path = f"/v2/endpoint/{_segment(namespace)}"
        return f"{path}/{_segment(name)}" if name is not None else path

    # -- identity -------------------------------------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        return self._json("GET", "/api/whoami-v2")

    def namespaces(self) -> list[dict[str, Any]]:
        """The namespaces this token can act in (every one for the admin): `[{"name", "kind"}]`."""
        body = self._json("GET", "/api/namespaces")
        return list(body.get("items", [])) if isinstance(body, dict) else []

    def create_namespace(self, name: str, *, kind: str = "org") -> dict[str, Any]:
        return self._json("POST", "/api/namespaces", json={"name": name, "kind": kind})

    # -- endpoints ------------------------------------------------------------------------------------------

    def list_endpoints(self, namespace: str) -> list[dict[str, Any]]:
        body = self._json("GET", self._ep(namespace))
        return list(body.get("items", [])) if isinstance(body, dict) else list(body or [])

    def get_endpoint(self, namespace: str, name: str) -> dict[str, Any]:
        return self._json("GET", self._ep(namespace, name))

    def create_endpoint(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a body built by `controlplane.bodies.create_body`."""
        return self._json("POST", self._ep(namespace), json=body)

    def update_endpoint(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT a body built by `controlplane.bodies.update_body`; the API merges it field by field."""
        return self._json("PUT", self._ep(namespace, name), json=body)

    def delete_endpoint(self, namespace: str, name: str) -> Any:
        """DELETE; answers the endpoint as the API accepted the deletion (202)."""
        return self._json("DELETE", self._ep(namespace, name))

    def action(self, namespace: str, name: str, verb: str) -> dict[str, Any]:
        """`pause`, `resume` or `scale-to-zero`: POST with no body, answers the endpoint."""
        return self._json("POST", f"{self._ep(namespace, name)}/{verb}")

    def logs(self, namespace: str, name: str, **params: Any) -> Any:
        """The endpoint's replica logs; JSON or plain text depending on the server."""
        response = self.request("GET", f"{self._ep(namespace, name)}/logs", params=_clean(params))
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def stream_logs(self, namespace: str, name: str, **params: Any) -> Iterator[str]:
        """Follow the logs: the server keeps the response open and sends lines as replicas write them."""
        import httpx

        try:
            with self._http.stream("GET", f"{self._ep(namespace, name)}/logs", params=_clean(params),
                                   timeout=httpx.Timeout(30.0, read=None)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise EndpointctlHTTPError(response.status_code, error_message(response), response=response)
                yield from response.iter_lines()
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc

    def events(self, namespace: str, name: str, **params: Any) -> Any:
        return self._json("GET", f"{self._ep(namespace, name)}/events", params=_clean(params))

    # -- hardware -------------------------------------------------------------------------------------------

    def hardware(self, namespace: str) -> dict[str, Any]:
        return self._json("GET", f"/v2/provider/{_segment(namespace)}")

    # -- model catalog --------------------------------------------------------------------------------------

    def catalog(self, **filters: Any) -> list[dict[str, Any]]:
        """`GET /api/v1/catalog/list` with huggingface_hub's filters (accelerator, engine, license, task, search,
        limit): the models, each with its recipes."""
        body = self._json("GET", "/api/v1/catalog/list", params=_clean(filters))
        return list(body.get("items", [])) if isinstance(body, dict) else []

    def deploy_from_catalog(self, namespace: str, *, repo_id: str | None = None, recipe_id: str | None = None,
                            name: str | None = None, accelerator: str | None = None,
                            gguf_file: str | None = None) -> dict[str, Any]:
        """The body `create_inference_endpoint_from_catalog` sends; answers the created endpoint."""
        if (repo_id is None) == (recipe_id is None):
            raise ValueError("give exactly one of repo_id or recipe_id")
        payload: dict[str, Any] = {"namespace": namespace}
        if name is not None:
            payload["config"] = {"name": name}
        if recipe_id is not None:
            path = f"/api/v1/catalog/recipe/{_segment(recipe_id)}/deploy"
        else:
            assert repo_id is not None
            path = f"/api/v1/catalog/model/{'/'.join(_segment(part) for part in repo_id.split('/'))}/deploy"
            payload.update(_clean({"accelerator": accelerator, "ggufFile": gguf_file}))
        body = self._json("POST", path, json=payload)
        return body.get("endpoint", body) if isinstance(body, dict) else body

    def recommend(self, repository: str, **params: Any) -> dict[str, Any]:
        """`GET /api/v1/catalog/recommend`: the smallest instance for the repository (context, concurrency, dtype,
        accelerator, vendor, region, revision), with the arithmetic."""
        return self._json("GET", "/api/v1/catalog/recommend", params=_clean({"repository": repository, **params}))

    # -- tokens ---------------------------------------------------------------------------------------------

    def create_token(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", "/api/tokens", json=payload)

    def list_tokens(self) -> Any:
        return self._json("GET", "/api/tokens")

    def revoke_token(self, token_id: str) -> Any:
        """DELETE; answers the revoked token's record (never its secret)."""
        return self._json("DELETE", f"/api/tokens/{_segment(token_id)}")
