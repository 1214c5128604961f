"""Prometheus metrics of the control plane: request counts and latencies by route template, endpoints by state.

The middleware is plain ASGI (no BaseHTTPMiddleware) so it costs microseconds on the hot GET path; the endpoint
gauge is computed at scrape time from the database, so it is right in every API process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from common.models import Endpoint


class EndpointCollector:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def collect(self) -> Any:
        gauge = GaugeMetricFamily("endpointctl_endpoints", "Endpoints by observed state and desired state",
                                  labels=["state", "desired_state"])
        try:
            with self._sessions() as session:
                rows = session.execute(select(Endpoint.state, Endpoint.desired_state, func.count())
                                       .group_by(Endpoint.state, Endpoint.desired_state)).all()
        except SQLAlchemyError:
            rows = []
        for state, desired, count in rows:
            gauge.add_metric([state, desired], count)
        yield gauge


class Metrics:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("endpointctl_api_requests_total", "API requests",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("endpointctl_api_request_seconds", "API request latency", ["method", "route"],
                                 registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
        self.registry.register(EndpointCollector(sessions))


class MetricsMiddleware:
    def __init__(self, app: Callable, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status["code"])).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - start)
