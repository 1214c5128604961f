"""The Celery application shared by the API (which only enqueues) and the worker (which runs the tasks).

The broker is Redis when REDIS_URL is set and kombu's SQLAlchemy transport on SQLite otherwise, so the embedded
default runs the very same tasks without a broker server. Task names are strings here so that the API can enqueue
without importing the worker's providers.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import Celery

import worker.embedded_broker  # noqa: F401 - registers the `esqla` transport alias
from common.config import Settings, get_settings

log = logging.getLogger(__name__)

RECONCILE = "worker.reconcile"
RESYNC_ALL = "worker.resync_all"
SCALE_IDLE_TO_ZERO = "worker.scale_idle_to_zero"
AUTOSCALE = "worker.autoscale"
REFRESH_CAPACITY = "worker.refresh_capacity"
PROBE = "worker.probe"
QUEUE = "endpointctl"


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("endpointctl", include=["worker.tasks", "worker.watchdog"])
    app.conf.update(
        broker_url=settings.broker_url,
        broker_connection_retry_on_startup=True,
        # Level-triggered reconciles make results meaningless; status lives in the database.
        task_ignore_result=True,
        # A reconcile killed mid-way is redelivered rather than lost; reconciles are idempotent.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE,
        broker_transport_options={"visibility_timeout": 300} if settings.redis_url else {},
        worker_hijack_root_logger=False,
        beat_schedule={
            "resync-all": {"task": RESYNC_ALL, "schedule": timedelta(seconds=settings.resync_interval)},
            "scale-idle-to-zero": {"task": SCALE_IDLE_TO_ZERO, "schedule": timedelta(seconds=settings.idle_check_interval)},
            "autoscale": {"task": AUTOSCALE, "schedule": timedelta(seconds=settings.autoscale_interval)},
            "refresh-capacity": {"task": REFRESH_CAPACITY, "schedule": timedelta(seconds=settings.capacity_interval)},
        },
    )
    return app


app = make_celery()


def enqueue_reconcile(endpoint_id: int) -> bool:
    """Ask the worker to reconcile one endpoint. Never raises: a lost message is repaired by resync_all."""
    try:
        app.send_task(RECONCILE, args=[endpoint_id], queue=QUEUE, retry=True,
                      retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2})
    except Exception as exc:  # noqa: BLE001 - the broker's many failure types all mean "resync will do it"
        log.warning("could not enqueue reconcile(%s): %s; the periodic resync will pick it up", endpoint_id, exc)
        return False
    return True
