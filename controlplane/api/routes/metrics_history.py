"""`GET /v2/endpoint/{namespace}/{name}/metrics`: an endpoint's load over the last hour, for the dashboard's charts.

The route sits beside the endpoint's events and logs and follows their rules: the caller must see the endpoint
(404 otherwise, as for a missing one). The numbers are the worker's samples of the replicas' own metrics.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from controlplane.api.deps import ContextDep
from controlplane.api.responses import FastJSONResponse
from controlplane.api.routes.endpoints import ERRORS
from controlplane.services.metrics_history import MAX_WINDOW, MIN_WINDOW, read_series

router = APIRouter(prefix="/v2/endpoint", tags=["endpoints"], responses=ERRORS)


class MetricSeries(BaseModel):
    """Aligned columns, oldest first: `t` in Unix seconds, rates per second, latencies in seconds, null where the
    interval measured nothing (no finished request, a replica that exports no metrics)."""

    t: list[float]
    requestsPerSecond: list[float | None]
    outputTokensPerSecond: list[float | None]
    ttftP50: list[float | None]
    ttftP95: list[float | None]
    latencyP50: list[float | None]
    latencyP95: list[float | None]
    pendingRequests: list[float | None]
    readyReplicas: list[int]
    targetReplicas: list[int]


class MetricsPublic(BaseModel):
    window: int
    interval: float
    series: MetricSeries


@router.get("/{namespace}/{name}/metrics", responses={200: {"model": MetricsPublic}},
            summary="Load over the last `window` seconds (at most an hour), sampled by the worker every "
                    "`interval` seconds: requests/s, output tokens/s, time to first token and latency p50/p95, "
                    "pending requests, replicas")
def read_endpoint_metrics(namespace: str, name: str, ctx: ContextDep,
                          window: Annotated[int, Query(ge=MIN_WINDOW, le=MAX_WINDOW)] = MAX_WINDOW
                          ) -> FastJSONResponse:
    with ctx:
        row = ctx.endpoints().get(namespace, name)
        return FastJSONResponse(read_series(ctx.session, row, window=window, interval=ctx.settings.metrics_interval))
