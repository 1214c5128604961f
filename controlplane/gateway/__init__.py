"""Data-plane gateway: proxies <base>/endpoints/<namespace>/<name>/... to the endpoint's ready replicas.

`router` is included by the API app; the `Gateway` instance (HTTP client pool, caches) lives on `app.state.gateway`
and is created lazily on first use, so the API's own tests pay nothing for it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

router = APIRouter(tags=["gateway"])
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]


def get_gateway(request: Request):
    gateway = getattr(request.app.state, "gateway", None)
    if gateway is None:
        from controlplane.core.config import get_settings
        from controlplane.db import session_factory
        from controlplane.auth import authenticate_token
        from controlplane.gateway.proxy import Gateway

        settings = getattr(request.app.state, "settings", None) or get_settings()
        metrics = getattr(request.app.state, "metrics", None)
        gateway = request.app.state.gateway = Gateway(settings, session_factory(settings), authenticate_token,
                                                      registry=metrics.registry if metrics else None)
    return gateway


@router.api_route("/endpoints/{namespace}/{name}", methods=METHODS, include_in_schema=False)
async def proxy_root(request: Request, namespace: str, name: str) -> Response:
    return await get_gateway(request).handle(request, namespace, name, "")


@router.api_route("/endpoints/{namespace}/{name}/{path:path}", methods=METHODS, include_in_schema=False)
async def proxy_path(request: Request, namespace: str, name: str, path: str) -> Response:
    return await get_gateway(request).handle(request, namespace, name, path)
