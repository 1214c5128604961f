"""The worker's Celery app: the shared broker settings (`common.queue`) plus the task modules and the beat schedule.

`celery -A worker.celery_app:app worker|beat` runs it; the API never imports it (it produces messages with its own
app built by `common.queue.make_celery`).
"""

from __future__ import annotations

from datetime import timedelta

from celery import Celery

from common.config import Settings, get_settings
from common.queue import (AUTOSCALE, REFRESH_CAPACITY, RESYNC_ALL, SAMPLE_METRICS, SCALE_IDLE_TO_ZERO,
                          make_celery)


def make_worker_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = make_celery(settings, include=["worker.tasks", "worker.watchdog", "worker.metrics_sampler"])
    app.conf.beat_schedule = {
        "resync-all": {"task": RESYNC_ALL, "schedule": timedelta(seconds=settings.resync_interval)},
        "scale-idle-to-zero": {"task": SCALE_IDLE_TO_ZERO, "schedule": timedelta(seconds=settings.idle_check_interval)},
        "autoscale": {"task": AUTOSCALE, "schedule": timedelta(seconds=settings.autoscale_interval)},
        "refresh-capacity": {"task": REFRESH_CAPACITY, "schedule": timedelta(seconds=settings.capacity_interval)},
        "sample-metrics": {"task": SAMPLE_METRICS, "schedule": timedelta(seconds=settings.metrics_interval)},
    }
    return app


app = make_worker_celery()
