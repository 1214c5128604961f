"""Data-plane gateway: proxies <base>/endpoints/<namespace>/<name>/... to the endpoint's ready replicas.

It is mounted as the outermost ASGI middleware of the API app rather than as a router: every streamed token passes
through it, and on one host each CPU cycle the gateway spends is taken from the replicas. Skipping FastAPI's
route matching and the API's middlewares halved the gateway's CPU per token. The `Gateway` (connection pool,
caches, metrics) lives on `app.state.gateway` and is created on first use.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

PREFIX = "/endpoints/"


def get_gateway(app):
    gateway = getattr(app.state, "gateway", None)
    if gateway is None:
        from common.config import get_settings
        from common.db import session_factory
        from controlplane.auth import authenticate_token
        from controlplane.gateway.proxy import Gateway

        settings = getattr(app.state, "settings", None) or get_settings()
        metrics = getattr(app.state, "metrics", None)
        gateway = app.state.gateway = Gateway(settings, session_factory(settings), authenticate_token,
                                              registry=metrics.registry if metrics else None,
                                              enqueue=app.state.enqueue)
    return gateway


class GatewayMiddleware:
    """Routes `/endpoints/<namespace>/<name>[/<path>]` to the gateway; everything else to the API."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PREFIX):
            parts = scope["path"][len(PREFIX):].split("/", 2)
            if len(parts) >= 2 and parts[0] and parts[1]:
                request = Request(scope, receive)
                namespace, name, path = _address(scope)
                response = await get_gateway(scope["app"]).handle(request, namespace, name, path)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _raw_parts(scope: Scope) -> list[str]:
    """"", "endpoints", namespace, name, rest — split on the path as the client encoded it (`path` is decoded, so
    an encoded '/' inside a name would otherwise move the boundary between name and replica path)."""
    raw = scope.get("raw_path")
    if raw is None:
        raw = quote(scope["path"]).encode("latin-1")
    return raw.decode("latin-1").split("/", 4)


def _address(scope: Scope) -> tuple[str, str, str]:
    """Namespace and name (percent-decoded; the gateway checks them against the API's name rules) and the replica
    path (still encoded)."""
    parts = _raw_parts(scope)
    namespace = unquote(parts[2]) if len(parts) > 2 else ""
    name = unquote(parts[3]) if len(parts) > 3 else ""
    return namespace, name, parts[4] if len(parts) == 5 else ""


def _replica_path(scope: Scope) -> str:
    """What follows `/endpoints/<namespace>/<name>/`, encoded exactly as the client sent it."""
    return _address(scope)[2]
