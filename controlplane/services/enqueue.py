"""The API's port to the worker: `Enqueue`, called with an endpoint id after its write has committed.

`create_app` injects one (`make_enqueuer` by default, a fake in tests and embeddings) and every caller — the
endpoint service and the gateway's wakes — uses that one. The message is produced by `common.queue`, so the API
never imports the worker; a failed send is logged and swallowed there, since the worker's resync repairs it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial

from celery import Celery

from common.config import Settings
from common.queue import enqueue_reconcile, make_celery

Enqueue = Callable[[int], bool]

_producers: dict[str, Celery] = {}
_lock = threading.Lock()


def make_enqueuer(settings: Settings) -> Enqueue:
    """A producer per broker URL and process: Celery apps keep a connection pool each."""
    with _lock:
        app = _producers.get(settings.broker_url)
        if app is None:
            app = _producers[settings.broker_url] = make_celery(settings)
    return partial(enqueue_reconcile, app)
