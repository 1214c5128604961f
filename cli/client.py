"""A small httpx client for the control plane's REST API (the Inference Endpoints v2 wire format).

It owns the boundary between HTTP and the CLI: transport failures become `ControlPlaneUnreachable` and error
statuses become `ApiError` carrying the server's own message (the API's error bodies hold an `error` string;
FastAPI's default `detail` and huggingface_hub's `X-Error-Message` header are understood too). Commands never see
an httpx exception.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx

from cli.errors import ApiError, CliError, ControlPlaneUnreachable

USER_AGENT = "endpointctl-cli"


def _segment(value: str) -> str:
    """Quote one path segment, so a name with '/' or '?' cannot address another route."""
    if not value or value in (".", "..") or "/" in value:
        raise CliError(f"invalid name {value!r}: names and namespaces cannot be empty, '.', '..' or contain '/'", exit_code=2)
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


class ControlPlaneClient:
    """Typed calls to the control plane; every method returns decoded JSON or raises a `CliError`."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise ControlPlaneUnreachable(f"invalid control-plane URL {url!r}: it must start with http:// or https://")
        headers = {"user-agent": USER_AGENT}
        if token:
            headers["authorization"] = f"Bearer {token}"
        try:
            self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        except httpx.InvalidURL as exc:
            raise ControlPlaneUnreachable(f"invalid control-plane URL {url!r}: {exc}") from exc

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ControlPlaneClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ------------------------------------------------------------------------------------------

    def _transport_error(self, exc: httpx.TransportError) -> ControlPlaneUnreachable:
        if isinstance(exc, httpx.TimeoutException):
            return ControlPlaneUnreachable(f"the control plane at {self.url} did not answer in time ({type(exc).__name__})")
        reason = str(exc) or type(exc).__name__
        return ControlPlaneUnreachable(f"cannot reach the control plane at {self.url}: {reason}")

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
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
            raise ApiError(response.status_code, message)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(response.status_code, f"the control plane sent a response that is not JSON ({method} {path})") from exc

    @staticmethod
    def _ep(namespace: str, name: str | None = None) -> str:
        path = f"/v2/endpoint/{_segment(namespace)}"
        return f"{path}/{_segment(name)}" if name is not None else path

    # -- identity -------------------------------------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        return self._json("GET", "/api/whoami-v2")

    # -- endpoints ------------------------------------------------------------------------------------------

    def list_endpoints(self, namespace: str) -> list[dict[str, Any]]:
        body = self._json("GET", self._ep(namespace))
        return list(body.get("items", [])) if isinstance(body, dict) else list(body or [])

    def get_endpoint(self, namespace: str, name: str) -> dict[str, Any]:
        return self._json("GET", self._ep(namespace, name))

    def create_endpoint(self, namespace: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", self._ep(namespace), json=payload)

    def update_endpoint(self, namespace: str, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self._json("PUT", self._ep(namespace, name), json=payload)

    def delete_endpoint(self, namespace: str, name: str) -> None:
        self.request("DELETE", self._ep(namespace, name))

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
        try:
            with self._http.stream("GET", f"{self._ep(namespace, name)}/logs", params=_clean(params), timeout=httpx.Timeout(30.0, read=None)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ApiError(response.status_code, error_message(response))
                yield from response.iter_lines()
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from exc

    def events(self, namespace: str, name: str, **params: Any) -> Any:
        return self._json("GET", f"{self._ep(namespace, name)}/events", params=_clean(params))

    # -- hardware -------------------------------------------------------------------------------------------

    def hardware(self, namespace: str) -> dict[str, Any]:
        return self._json("GET", f"/v2/provider/{_segment(namespace)}")

    # -- tokens ---------------------------------------------------------------------------------------------

    def create_token(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", "/api/tokens", json=payload)

    def list_tokens(self) -> Any:
        return self._json("GET", "/api/tokens")

    def revoke_token(self, token_id: str) -> None:
        self.request("DELETE", f"/api/tokens/{_segment(token_id)}")


def _clean(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}
