"""How the API hands an endpoint to the worker: a Celery `reconcile` message, after the write has committed.

The process-wide Celery app in `worker.celery_app` is used when the app's settings name the same broker;
an app built with other settings (tests, embedding) gets its own Celery app for its broker. Either way a failed
send is logged and swallowed: the desired state is already stored and the worker's periodic resync finds it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from common.config import Settings

log = logging.getLogger(__name__)

Enqueue = Callable[[int], bool]


def make_enqueuer(settings: Settings) -> Enqueue:
    from worker import celery_app

    if celery_app.app.conf.broker_url == settings.broker_url:
        return celery_app.enqueue_reconcile
    app = celery_app.make_celery(settings)

    def enqueue(endpoint_id: int) -> bool:
        try:
            app.send_task(celery_app.RECONCILE, args=[endpoint_id], queue=celery_app.QUEUE, retry=True,
                          retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2})
        except Exception as exc:  # noqa: BLE001 - every broker failure means "resync will do it"
            log.warning("could not enqueue reconcile(%s): %s; the periodic resync will pick it up", endpoint_id, exc)
            return False
        return True

    return enqueue
