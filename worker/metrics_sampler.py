"""The history behind the dashboard's charts: `sample_metrics` (beat) reads every live endpoint's replicas and
stores one `EndpointMetricSample` per endpoint per pass; rows older than `metrics_retention` are pruned as it goes.

Why the worker and the database, and not a ring buffer in the gateway: an API process sees only the requests that
passed through it (with several API replicas each would draw a different picture, and a restart would forget the
hour), and time to first token is known only to the replicas. The worker already reads the replicas' Prometheus
`/metrics` for the autoscaler, on either provider, and one row per endpoint per interval is cheap to keep.

Each replica's counters are cumulative since it started; a pass keeps them in its row (`counters`, by replica URL)
so the next pass, on whichever worker, takes the difference. A counter that went down means the replica restarted:
its whole count is new. Percentiles come from the difference of the histograms' buckets, interpolated within a
bucket as Prometheus' `histogram_quantile` does. Which names each engine exports is `worker.engines.ENGINE_METRICS`
(the bundled runtime exports vLLM's; TGI and llama.cpp have no time-to-first-token histogram, llama.cpp no request
count). A replica whose image exports none of them (a custom container) contributes only to the replica counts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, select

from common.config import get_settings
from common.db import session_factory, session_scope
from common.models import DesiredState, Endpoint, EndpointMetricSample
from common.queue import SAMPLE_METRICS
from worker.celery_app import app
from worker.engines import ENGINE_METRICS

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT = 2.0
SCRAPERS = 16
MAX_METRICS_BYTES = 2 * 1024 * 1024
"""A replica's exposition larger than this is not parsed: tenant images choose what they export."""

# Families, first match wins: (cumulative count or sum, histogram) sources per quantity, in the engines' order.
_REQUESTS = tuple(m.requests for m in ENGINE_METRICS if m.requests)
_TOKENS = tuple(m.tokens for m in ENGINE_METRICS if m.tokens)
_TTFT = tuple(m.ttft for m in ENGINE_METRICS if m.ttft)
_LATENCY = tuple(m.latency for m in ENGINE_METRICS if m.latency)
_PENDING = tuple(m.pending for m in ENGINE_METRICS)


@dataclass
class ReplicaReading:
    """What one scrape of one replica says, cumulative since the replica started (except `pending`, a gauge)."""

    requests: float | None = None
    tokens: float | None = None
    ttft: dict[str, float] = field(default_factory=dict)  # histogram buckets: upper bound ("le") -> cumulative count
    latency: dict[str, float] = field(default_factory=dict)
    pending: float | None = None

    def counters(self) -> dict:
        return {"requests": self.requests, "tokens": self.tokens, "ttft": self.ttft, "latency": self.latency}


def parse_exposition(text: str) -> ReplicaReading:
    """The quantities the charts need from a Prometheus text exposition; samples of one family are summed over
    their labels (a vLLM family carries the model name). Raises ValueError on text that is not an exposition."""
    sums: dict[str, float] = {}
    buckets: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not math.isfinite(sample.value):
                continue  # a tenant image's NaN or Inf would poison every sum it joins
            if sample.name.endswith("_bucket") and "le" in sample.labels:
                le = sample.labels["le"]
                per = buckets.setdefault(family.name, {})
                per[le] = per.get(le, 0.0) + sample.value
            else:
                suffix = sample.name[len(family.name):].lstrip("_") or "value"
                key = f"{family.name}:{suffix}"
                sums[key] = sums.get(key, 0.0) + sample.value
    reading = ReplicaReading()
    reading.requests = next((sums[f"{n}:{s}"] for n, s in _REQUESTS if f"{n}:{s}" in sums), None)
    reading.tokens = next((sums[f"{n}:{s}"] for n, s in _TOKENS if f"{n}:{s}" in sums), None)
    reading.ttft = next((buckets[n] for n in _TTFT if n in buckets), {})
    reading.latency = next((buckets[n] for n in _LATENCY if n in buckets), {})
    for names in _PENDING:
        values = [sums[f"{n}:value"] for n in names if f"{n}:value" in sums]
        if values:
            reading.pending = sum(values)
            break
    return reading


def scrape(url: str, client: httpx.Client) -> ReplicaReading | None:
    """One replica's reading, or None when it cannot be read (down, slow, no metrics, oversize, not Prometheus)."""
    try:
        with client.stream("GET", url.rstrip("/") + "/metrics") as response:
            if response.status_code != 200:
                return None
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_METRICS_BYTES:
                    return None
        return parse_exposition(body.decode("utf-8", errors="replace"))
    except (httpx.HTTPError, ValueError) as exc:
        log.debug("metrics of %s unreadable: %s", url, exc)
        return None


def _difference(now: float | None, before: float | None) -> float | None:
    """Growth of a cumulative counter; a counter that went down belongs to a restarted replica, so all of it is new."""
    if now is None:
        return None
    if before is None or now < before:
        return now
    return now - before


def _bucket_difference(now: Mapping[str, float], before: Mapping[str, float] | None) -> dict[str, float]:
    if not before or any(now.get(le, 0.0) < count for le, count in before.items()):
        return dict(now)
    return {le: count - before.get(le, 0.0) for le, count in now.items()}


def histogram_quantile(q: float, buckets: Mapping[str, float]) -> float | None:
    """Prometheus' estimate of the q-quantile from cumulative buckets (le -> count): linear within the bucket that
    holds it; in the +Inf bucket, the highest finite bound. None when the histogram holds no observation."""
    bounds = sorted((float(le), count) for le, count in buckets.items())
    if not bounds or bounds[-1][1] <= 0:
        return None
    rank = q * bounds[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for upper_bound, count in bounds:
        if count >= rank:
            if math.isinf(upper_bound):
                return lower_bound
            if count == lower_count:
                return upper_bound
            return lower_bound + (upper_bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = upper_bound, count
    return bounds[-1][0] if math.isfinite(bounds[-1][0]) else lower_bound


@dataclass
class Point:
    """One chart point: rates over `seconds` since the previous sample, percentiles of the requests finished then."""

    requests_per_second: float | None = None
    output_tokens_per_second: float | None = None
    ttft_p50: float | None = None
    ttft_p95: float | None = None
    latency_p50: float | None = None
    latency_p95: float | None = None
    pending_requests: float | None = None
    counters: dict = field(default_factory=dict)


def make_point(readings: Mapping[str, ReplicaReading | None], previous: Mapping[str, dict] | None,
               seconds: float | None) -> Point:
    """The point of one endpoint from its replicas' readings (by URL; None: not readable this time) and the
    counters of the previous sample taken `seconds` ago (None: no usable previous sample, so no rates)."""
    previous = previous or {}
    point = Point()
    requests = tokens = 0.0
    have_requests = have_tokens = False
    ttft: dict[str, float] = {}
    latency: dict[str, float] = {}
    pending: list[float] = []
    for url, reading in readings.items():
        if reading is None:
            if url in previous:  # unreadable this time: keep its counters, so its next reading is a difference
                point.counters[url] = previous[url]
            continue
        point.counters[url] = reading.counters()
        before = previous.get(url) or {}
        if reading.pending is not None:
            pending.append(reading.pending)
        if not before and seconds is None:
            continue
        if (grown := _difference(reading.requests, before.get("requests"))) is not None:
            requests, have_requests = requests + grown, True
        if (grown := _difference(reading.tokens, before.get("tokens"))) is not None:
            tokens, have_tokens = tokens + grown, True
        for target, now, old in ((ttft, reading.ttft, before.get("ttft")),
                                 (latency, reading.latency, before.get("latency"))):
            for le, count in _bucket_difference(now, old).items():
                target[le] = target.get(le, 0.0) + count
    if pending:
        point.pending_requests = sum(pending)
    if seconds is not None and seconds > 0:
        point.requests_per_second = requests / seconds if have_requests else None
        point.output_tokens_per_second = tokens / seconds if have_tokens else None
        point.ttft_p50, point.ttft_p95 = histogram_quantile(0.5, ttft), histogram_quantile(0.95, ttft)
        point.latency_p50, point.latency_p95 = histogram_quantile(0.5, latency), histogram_quantile(0.95, latency)
    return point


def _live(endpoint: Endpoint) -> bool:
    return endpoint.desired_state != DesiredState.DELETED.value


@app.task(name=SAMPLE_METRICS)
def sample_metrics() -> int:
    """One pass over every endpoint: a sample each, then the retention's pruning. Returns the samples written."""
    settings = get_settings()
    factory = session_factory(settings)
    now = datetime.now(UTC)
    with session_scope(factory) as session:
        endpoints = [(e.id, e.ready_replicas, e.target_replicas, e.observed.ready_urls())
                     for e in session.scalars(select(Endpoint)) if _live(e)]
        latest = {}
        for endpoint_id, *_ in endpoints:
            row = session.scalars(select(EndpointMetricSample).where(EndpointMetricSample.endpoint_id == endpoint_id)
                                  .order_by(EndpointMetricSample.at.desc()).limit(1)).first()
            if row is not None:
                latest[endpoint_id] = (row.at, row.counters)
    samples = []
    urls = [url for *_, endpoint_urls in endpoints for url in endpoint_urls]
    # Replicas are read in parallel: a slow or silent one holds the pass up by one timeout, not one per replica.
    with httpx.Client(timeout=SCRAPE_TIMEOUT) as client, ThreadPoolExecutor(max_workers=SCRAPERS) as pool:
        scraped = dict(zip(urls, pool.map(lambda url: scrape(url, client), urls)))
    for endpoint_id, ready, target, endpoint_urls in endpoints:
        readings = {url: scraped[url] for url in endpoint_urls}
        previous_at, previous = latest.get(endpoint_id, (None, None))
        seconds = (now - previous_at).total_seconds() if previous_at is not None else None
        if seconds is not None and seconds > 3 * settings.metrics_interval:
            seconds, previous = None, None  # a gap (worker down): no rate over it
        point = make_point(readings, previous, seconds)
        samples.append(EndpointMetricSample(endpoint_id=endpoint_id, at=now, ready_replicas=ready,
                                            target_replicas=target, **vars(point)))
    with session_scope(factory) as session:
        existing = set(session.scalars(select(Endpoint.id)))
        session.add_all(s for s in samples if s.endpoint_id in existing)  # one may have been deleted meanwhile
        session.execute(delete(EndpointMetricSample)
                        .where(EndpointMetricSample.at < now - timedelta(seconds=settings.metrics_retention)))
    return len(samples)
