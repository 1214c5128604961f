"""Celery tasks: thin wrappers that give the reconciler a lease, retries and a schedule.

- `reconcile(endpoint_id)`: one level-triggered pass; requeues itself (deduplicated) until converged.
- `resync_all` (beat): re-reconciles every endpoint and removes provider objects no endpoint owns, so lost
  messages, crashed workers and drift repair themselves.
- `scale_idle_to_zero` (beat): endpoints idle for `scaleToZeroTimeout` minutes go to zero replicas.
- `autoscale` (beat): replicas between minReplica and maxReplica from pending requests per replica.
- `refresh_capacity` (beat): the cluster's accelerators per instance type, for the hardware catalog.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import httpx
from celery.signals import worker_ready
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from common.config import get_settings
from common.db import session_factory, session_scope
from common.models import ClusterCapacity, DesiredState, Endpoint, EndpointState, EventType, record_event
from common.observed import AutoscaleSample
from common.queue import AUTOSCALE, QUEUE, RECONCILE, REFRESH_CAPACITY, RESYNC_ALL, SCALE_IDLE_TO_ZERO, enqueue_reconcile
from worker.celery_app import app
from worker.lease import endpoint_lease, _redis
from worker.metrics_sampler import parse_exposition
from worker.providers import get_provider
from worker.providers.base import ProviderError, ProviderTemporaryError
from worker.reconcile import all_endpoint_ids, reconcile_endpoint

log = logging.getLogger(__name__)

_requeue_marks: dict[int, float] = {}
_requeue_lock = threading.Lock()


def schedule_requeue(endpoint_id: int, delay: float) -> None:
    """At most one pending requeue per endpoint, so repeated triggers don't multiply reconcile chains."""
    settings = get_settings()
    delay = max(delay, 0.2)
    if settings.redis_url:
        if not _redis(settings.redis_url).set(f"endpointctl:requeue:{endpoint_id}", "1", nx=True,
                                               px=int(delay * 1000)):
            return
    else:
        with _requeue_lock:
            now = time.monotonic()
            if _requeue_marks.get(endpoint_id, 0) > now:
                return
            _requeue_marks[endpoint_id] = now + delay
    enqueue_reconcile(app, endpoint_id, countdown=delay)


@app.task(name=RECONCILE, bind=True, autoretry_for=(ProviderTemporaryError, OperationalError),
          retry_backoff=1, retry_backoff_max=60, retry_jitter=True, max_retries=20)
def reconcile(self, endpoint_id: int) -> str | None:
    settings = get_settings()
    with endpoint_lease(settings, endpoint_id) as held:
        if not held:
            # Another worker is reconciling it now; it re-checks the generation before writing and requeues.
            schedule_requeue(endpoint_id, 1.0)
            return "busy"
        outcome = reconcile_endpoint(session_factory(settings), get_provider(settings), settings, endpoint_id)
    if outcome.requeue_after is not None:
        schedule_requeue(endpoint_id, outcome.requeue_after)
    return outcome.state


@app.task(name=RESYNC_ALL)
def resync_all() -> int:
    settings = get_settings()
    factory = session_factory(settings)
    provider = get_provider(settings)
    ids = all_endpoint_ids(factory)
    with session_scope(factory) as session:
        known = {e.provider_key for e in session.scalars(select(Endpoint))}
    for key in provider.list_keys():
        if key not in known:
            log.warning("removing provider objects %s: no endpoint owns them", key)
            provider.delete(key)
    for endpoint_id in ids:
        enqueue_reconcile(app, endpoint_id)
    return len(ids)


def idle_since(endpoint: Endpoint) -> datetime:
    """Last request through the gateway, or when the endpoint last became ready, whichever is later."""
    candidates = [endpoint.last_activity_at]
    for condition in endpoint.conditions or []:
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            try:
                candidates.append(datetime.strptime(condition["lastTransitionTime"], "%Y-%m-%dT%H:%M:%S.%fZ")
                                  .replace(tzinfo=UTC))
            except (KeyError, ValueError):
                pass
    candidates = [c for c in candidates if c is not None] or [endpoint.updated_at]
    return max(candidates)


@app.task(name=SCALE_IDLE_TO_ZERO)
def scale_idle_to_zero() -> list[int]:
    settings = get_settings()
    factory = session_factory(settings)
    now = datetime.now(UTC)
    scaled = []
    with session_scope(factory) as session:
        rows = session.scalars(select(Endpoint).where(Endpoint.desired_state == DesiredState.RUNNING.value,
                                                      Endpoint.state == EndpointState.RUNNING.value))
        for endpoint in rows:
            scaling = endpoint.spec["compute"]["scaling"]
            timeout = scaling.get("scaleToZeroTimeout")
            if timeout is None or int(scaling.get("minReplica", 1)) > 0:
                continue
            idle = now - idle_since(endpoint)
            if idle < timedelta(minutes=float(timeout)):
                continue
            endpoint.desired_state = DesiredState.SCALED_TO_ZERO.value
            endpoint.generation += 1
            endpoint.updated_at = now
            record_event(session, endpoint, type=EventType.NORMAL, reason="ScaledToZero",
                         message=f"no traffic for {int(idle.total_seconds())}s (scaleToZeroTimeout {timeout} min)")
            scaled.append(endpoint.id)
    for endpoint_id in scaled:
        enqueue_reconcile(app, endpoint_id)
    return scaled


def pending_requests(url: str) -> float | None:
    """Queued + running requests of one replica, read from its Prometheus metrics with the names of whichever
    engine it runs (`worker.engines.ENGINE_METRICS`, the table the charts read too)."""
    try:
        text = httpx.get(url.rstrip("/") + "/metrics", timeout=2.0).text
        return parse_exposition(text).pending
    except (httpx.HTTPError, ValueError):
        return None


def recommend(pending: float, threshold: float, lower: int, upper: int) -> int:
    return min(upper, max(lower, math.ceil(pending / threshold) if pending > 0 else lower))


def stabilized(history: Sequence[AutoscaleSample], now: float, recommendation: int, current: int,
               window: float) -> tuple[int, tuple[AutoscaleSample, ...]]:
    """HPA-style: scale up at once, scale down only to the highest recommendation seen within `window`."""
    history = (*(h for h in history if now - h.at <= window), AutoscaleSample(at=now, replicas=recommendation))
    if recommendation >= current:
        return recommendation, history
    return max(h.replicas for h in history), history


@app.task(name=AUTOSCALE)
def autoscale() -> dict[int, int]:
    settings = get_settings()
    factory = session_factory(settings)
    changes: dict[int, int] = {}
    with session_scope(factory) as session:
        rows = list(session.scalars(select(Endpoint).where(Endpoint.desired_state == DesiredState.RUNNING.value,
                                                           Endpoint.state == EndpointState.RUNNING.value)))
        candidates = []
        for endpoint in rows:
            scaling = endpoint.spec["compute"]["scaling"]
            lower, upper = max(1, int(scaling.get("minReplica", 1))), int(scaling.get("maxReplica", 1))
            if upper <= lower:
                continue
            measure = scaling.get("measure") or {}
            threshold = measure.get("pendingRequests") or 1.5
            urls = endpoint.observed.ready_urls()
            candidates.append((endpoint.id, lower, upper, float(threshold), urls))
    for endpoint_id, lower, upper, threshold, urls in candidates:
        readings = [p for p in (pending_requests(u) for u in urls) if p is not None]
        if not readings:
            continue
        total = sum(readings)
        with session_scope(factory) as session:
            endpoint = session.get(Endpoint, endpoint_id)
            if endpoint is None:
                continue
            current = endpoint.desired_replicas or lower
            want, history = stabilized(endpoint.observed.autoscale_history, time.time(),
                                       recommend(total, threshold, lower, upper), current, settings.scale_down_window)
            endpoint.observed = endpoint.observed.model_copy(update={"autoscale_history": history})
            if want != current:
                endpoint.desired_replicas = want
                endpoint.generation += 1
                record_event(session, endpoint, type=EventType.NORMAL,
                             reason="ScaledUp" if want > current else "ScaledDown",
                             message=f"{total:g} pending requests over {len(readings)} replicas "
                                     f"(target {threshold:g} per replica): {current} → {want} replicas")
                changes[endpoint_id] = want
    for endpoint_id in changes:
        enqueue_reconcile(app, endpoint_id)
    return changes


@app.task(name=REFRESH_CAPACITY)
def refresh_capacity() -> dict[str, dict[str, int]] | None:
    """Store the cluster's accelerators per instance type for the catalog (providers that can tell: Kubernetes)."""
    settings = get_settings()
    provider = get_provider(settings)
    try:
        usage = provider.accelerator_usage()
    except ProviderError as exc:
        log.info("cluster capacity unavailable: %s", exc)
        return None
    if usage is None:
        return None
    now = datetime.now(UTC)
    with session_scope(session_factory(settings)) as session:
        for row in session.scalars(select(ClusterCapacity)):
            if row.instance_type not in usage:
                session.delete(row)
        for instance_type, seen in usage.items():
            row = session.get(ClusterCapacity, instance_type) or ClusterCapacity(instance_type=instance_type)
            row.allocatable, row.used = seen["allocatable"], seen["used"]
            row.max_allocatable_per_node = seen.get("max_allocatable_per_node", seen["allocatable"])
            row.max_free_per_node = seen.get("max_free_per_node", seen["allocatable"] - seen["used"])
            row.observed_at = now
            session.add(row)
    return usage


@worker_ready.connect
def _resync_on_start(**_kwargs) -> None:
    """A (re)started worker adopts live replicas and converges everything without waiting for the beat."""
    app.send_task(RESYNC_ALL, queue=QUEUE)
