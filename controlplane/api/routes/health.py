"""Liveness and readiness of the control plane (no authentication: probes carry no token, and they tell nothing
about tenants), and its metrics, which name every tenant's endpoints: the admin token or the scrape token only."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from controlplane.api.deps import MetricsReader
from controlplane.api.responses import FastJSONResponse
from controlplane.migrate import current_revision, head_revision
from controlplane.schemas import ErrorBody

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def read_healthz() -> FastJSONResponse:
    return FastJSONResponse({"status": "ok"})


@router.get("/readyz", summary="The database answers and its schema is at the latest migration")
def read_readyz(request: Request) -> FastJSONResponse:
    try:
        with request.app.state.sessions() as session:
            session.execute(text("SELECT 1"))
            revision = current_revision(session.connection())
    except SQLAlchemyError as exc:
        return FastJSONResponse({"status": "unavailable", "error": f"database: {type(exc).__name__}"},
                                status_code=503)
    head = head_revision()
    if revision != head:
        return FastJSONResponse({"status": "unavailable", "error": f"database schema at {revision}, expected {head}; "
                                 "run migrations (python -m controlplane migrate)"}, status_code=503)
    return FastJSONResponse({"status": "ok", "schema": revision})


@router.get("/metrics", summary="Prometheus metrics (the admin token or ENDPOINTCTL_METRICS_TOKEN)",
            dependencies=[MetricsReader], responses={code: {"model": ErrorBody} for code in (401, 403)})
def read_metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
