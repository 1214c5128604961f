"""The control-plane FastAPI application: v2 endpoint routes, hardware catalog, auth, the dashboard's session and
pages, health, metrics, gateway."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from common.catalog import catalog_for, load_catalog
from common.config import Settings, get_settings
from common.db import session_factory
from common.model_catalog import load_model_catalog
from controlplane.api import errors
from controlplane.api.routes import auth, catalog, endpoints, health, metrics_history, providers, session
from controlplane import dashboard
from controlplane.gateway import GatewayMiddleware
from controlplane.metrics import Metrics, MetricsMiddleware
from controlplane.services.catalog import check_recipes
from controlplane.services.enqueue import Enqueue, make_enqueuer
from controlplane.services.validation import SpecLimits

log = logging.getLogger(__name__)

DESCRIPTION = """
Self-hosted control plane speaking the Inference Endpoints v2 wire format: point
`huggingface_hub.constants.INFERENCE_ENDPOINTS_ENDPOINT` at `<this-url>/v2` and `HF_ENDPOINT` at `<this-url>`.

**Auth.** Every `/v2` and `/api` route takes `Authorization: Bearer <token>`. A token acts as one user namespace
and the organisations that user belongs to; the bootstrap admin token (`ENDPOINTCTL_ADMIN_TOKEN`, namespace
`ENDPOINTCTL_ADMIN_NAMESPACE`) acts on every namespace and mints tokens for users with `POST /api/tokens`.
A request for a namespace the token does not hold answers **404**, exactly as for one that does not exist.

**Dashboard.** `/ui/` (`/` redirects there) signs in with the same tokens through `POST /api/session`, which sets an
HttpOnly session cookie; cookie-authenticated POST/PUT/PATCH/DELETE must send `X-CSRF-Token` from `GET /api/session`.

**State.** Writes store the desired state and return at once; the worker reconciles and writes `status`.
Errors are `{"error": "...", "param"?: "..."}`.
"""


class ControlPlaneApp(FastAPI):
    """FastAPI with the data-plane gateway outside the whole middleware stack.

    `add_middleware` would still put Starlette's error middleware and FastAPI's own wrappers around the gateway,
    and each of them adds a frame to every streamed chunk; the gateway handles its own errors, so it goes first.
    """

    def build_middleware_stack(self):
        return GatewayMiddleware(super().build_middleware_stack())


def create_app(settings: Settings | None = None, *, enqueue: Enqueue | None = None) -> FastAPI:
    """Build the API for `settings` (default: the environment). Migrations are applied by the caller
    (`python -m controlplane` does it at start-up); `enqueue` replaces the Celery hand-off (embedding, tests)."""
    settings = settings or get_settings()
    app = ControlPlaneApp(title="endpointctl control plane", version="0.1.0", description=DESCRIPTION)
    app.state.settings = settings
    app.state.sessions = session_factory(settings)
    app.state.catalog = catalog_for(settings)
    # Recipes are checked against the plain hardware catalog: a GPU recipe is valid on a machine without a GPU.
    hardware = load_catalog(settings.hardware_catalog)
    app.state.model_catalog = load_model_catalog(settings.model_catalog, hardware)
    check_recipes(app.state.model_catalog, hardware, SpecLimits.from_settings(settings))
    app.state.enqueue = enqueue or make_enqueuer(settings)
    app.state.metrics = Metrics(app.state.sessions)
    errors.install(app)
    for module in (endpoints, metrics_history, providers, catalog, auth, session, health):
        app.include_router(module.router)
    app.include_router(dashboard.router)
    app.mount("/ui/static", dashboard.static_app(), name="dashboard-static")
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(dashboard.DashboardHeadersMiddleware)
    return app
