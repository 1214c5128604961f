"""Reading an endpoint's recent load for the dashboard's charts: the samples the worker's `sample_metrics` pass
wrote (worker/metrics_sampler.py), as aligned columns, which is what a chart library plots without reshaping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.models import Endpoint, EndpointMetricSample

MAX_WINDOW = 3600
MIN_WINDOW = 60
MAX_POINTS = 4000
"""More than an hour at the shortest sampling interval (1 s): the answer stays bounded whatever the settings."""

SERIES = {
    "requestsPerSecond": "requests_per_second",
    "outputTokensPerSecond": "output_tokens_per_second",
    "ttftP50": "ttft_p50",
    "ttftP95": "ttft_p95",
    "latencyP50": "latency_p50",
    "latencyP95": "latency_p95",
    "pendingRequests": "pending_requests",
    "readyReplicas": "ready_replicas",
    "targetReplicas": "target_replicas",
}
"""Wire name -> column. Seconds for the ttft and latency series; null where nothing was measured."""


def read_series(session: Session, endpoint: Endpoint, *, window: int, interval: float) -> dict:
    """The last `window` seconds of samples, oldest first: `t` (Unix seconds) and one column per series."""
    since = datetime.now(UTC) - timedelta(seconds=window)
    # Only the charted columns: the worker's per-replica counters are most of a row and none of the answer.
    columns = [EndpointMetricSample.at, *(getattr(EndpointMetricSample, c) for c in SERIES.values())]
    rows = session.execute(select(*columns)
                           .where(EndpointMetricSample.endpoint_id == endpoint.id, EndpointMetricSample.at >= since)
                           .order_by(EndpointMetricSample.at.desc()).limit(MAX_POINTS)).all()
    rows.reverse()
    series: dict[str, list] = {"t": [round(r[0].timestamp(), 3) for r in rows]}
    for i, wire in enumerate(SERIES, start=1):
        series[wire] = [r[i] for r in rows]
    return {"window": window, "interval": interval, "series": series}
