"""The reconcile hand-off: the broker, the task names, and the one function that asks for a reconcile.

Both sides build a Celery app from the same settings: the API only produces messages, the worker also consumes
them (`worker/celery_app.py` adds its task modules and the beat schedule). Task names are strings, so producing a
message never imports the worker. The broker is Redis when REDIS_URL is set and kombu's SQLAlchemy transport on
SQLite otherwise (`common/embedded_broker.py`), so the embedded default runs the very same tasks without a server.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from celery import Celery

import common.embedded_broker  # noqa: F401 - registers the `esqla` transport alias
from common.config import Settings

log = logging.getLogger(__name__)

RECONCILE = "worker.reconcile"
RESYNC_ALL = "worker.resync_all"
SCALE_IDLE_TO_ZERO = "worker.scale_idle_to_zero"
AUTOSCALE = "worker.autoscale"
REFRESH_CAPACITY = "worker.refresh_capacity"
PROBE = "worker.probe"
SAMPLE_METRICS = "worker.sample_metrics"
QUEUE = "endpointctl"

# A send waits at most ~0.4 s for a broker that is briefly away; after that the periodic resync does the work.
_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2}


def make_celery(settings: Settings, *, include: Iterable[str] = ()) -> Celery:
    app = Celery("endpointctl", include=list(include))
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
    )
    return app


def enqueue_reconcile(app: Celery, endpoint_id: int, *, countdown: float | None = None) -> bool:
    """Ask the worker to reconcile one endpoint (after `countdown` seconds). Never raises: the desired state is
    already stored, and a message the broker did not take is repaired by the worker's periodic resync."""
    try:
        app.send_task(RECONCILE, args=[endpoint_id], queue=QUEUE, countdown=countdown, retry=True,
                      retry_policy=_RETRY_POLICY)
    except Exception as exc:  # noqa: BLE001 - the broker's many failure types all mean "resync will do it"
        log.warning("could not enqueue reconcile(%s): %s; the periodic resync will pick it up", endpoint_id, exc)
        return False
    return True
