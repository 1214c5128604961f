"""Restart a worker whose broker consumer has silently stopped.

Celery 5 on a Redis broker can reconnect after a broker restart and then never receive another message: the
connection looks healthy, beat keeps publishing, the queue grows, and only a restart of the worker helps
(celery/celery#8030, #8091, #10205; still reported against 5.5). Level-triggered reconciliation repairs lost
messages, but not a worker that no longer reads any. So the worker checks its own consumption end to end: when it
has received nothing for a while it publishes a no-op probe to its own queue; if the broker accepted the probe and
nothing at all arrives within `stall_timeout`, the consumer is stuck and the process exits with EX_TEMPFAIL, so its
supervisor (`endpointctl up`, or the Deployment in a cluster) starts a fresh one. Reconciles are acked late and
idempotent, so the ones in flight are simply redelivered.

A worker whose every slot is busy legitimately receives nothing; the detector only counts time with a free slot.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from dataclasses import dataclass

from celery.signals import task_postrun, task_prerun, task_received, worker_ready, worker_shutting_down

from common.config import get_settings
from common.queue import PROBE, QUEUE
from worker.celery_app import app

log = logging.getLogger(__name__)

EX_TEMPFAIL = 75


class Action(enum.Enum):
    NOTHING = "nothing"
    PROBE = "probe"
    EXIT = "exit"


@dataclass
class StallDetector:
    """The decision alone (no clock, no broker), so it can be tested without a stuck consumer."""

    stall_timeout: float
    last_received: float
    probe_sent_at: float | None = None

    def received(self, now: float) -> None:
        self.last_received = now
        self.probe_sent_at = None

    def probe_sent(self, now: float) -> None:
        self.probe_sent_at = now

    def step(self, now: float, *, busy: bool) -> Action:
        if busy:  # every slot taken: nothing can be received, which says nothing about the consumer
            self.probe_sent_at = None
            self.last_received = now
            return Action.NOTHING
        if self.probe_sent_at is None:
            return Action.PROBE if now - self.last_received >= self.stall_timeout / 2 else Action.NOTHING
        return Action.EXIT if now - self.probe_sent_at >= self.stall_timeout else Action.NOTHING


class ConsumerWatchdog:
    def __init__(self, stall_timeout: float, concurrency: int) -> None:
        self.detector = StallDetector(stall_timeout=stall_timeout, last_received=time.monotonic())
        self.concurrency = max(concurrency, 1)
        self.active = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="consumer-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def on_received(self) -> None:
        with self._lock:
            self.detector.received(time.monotonic())

    def on_task(self, delta: int) -> None:
        with self._lock:
            self.active = max(self.active + delta, 0)

    def _run(self) -> None:
        interval = max(self.detector.stall_timeout / 8, 0.25)
        while not self._stop.wait(interval):
            with self._lock:
                action = self.detector.step(time.monotonic(), busy=self.active >= self.concurrency)
            if action is Action.PROBE:
                try:
                    app.send_task(PROBE, queue=QUEUE, retry=False)
                except Exception as exc:  # noqa: BLE001 - broker down: not the consumer's fault; retried next round
                    log.warning("watchdog: could not publish a probe (%s); will try again", exc)
                    continue
                with self._lock:
                    self.detector.probe_sent(time.monotonic())
            elif action is Action.EXIT:
                log.error("watchdog: the broker accepted a probe %.0fs ago but this worker has received nothing "
                          "since; its consumer is stuck (celery#8091). Exiting so the supervisor starts a fresh "
                          "worker.", self.detector.stall_timeout)
                logging.shutdown()
                os._exit(EX_TEMPFAIL)


_watchdog: ConsumerWatchdog | None = None


@app.task(name=PROBE, ignore_result=True, acks_late=False)
def probe() -> None:
    """Arrives, therefore the consumer consumes; receiving it is the whole point."""


@worker_ready.connect
def _start(sender=None, **_kwargs) -> None:
    global _watchdog
    timeout = get_settings().worker_stall_timeout
    if timeout <= 0 or _watchdog is not None:
        return
    concurrency = getattr(getattr(sender, "controller", None), "concurrency", None) or 1
    _watchdog = ConsumerWatchdog(timeout, int(concurrency))
    _watchdog.start()
    log.info("watchdog: restarts this worker if it receives nothing for %.0fs with a free slot", timeout)


@worker_shutting_down.connect
def _stop(**_kwargs) -> None:
    if _watchdog is not None:
        _watchdog.stop()


@task_received.connect
def _received(**_kwargs) -> None:
    if _watchdog is not None:
        _watchdog.on_received()


@task_prerun.connect
def _prerun(**_kwargs) -> None:
    if _watchdog is not None:
        _watchdog.on_task(+1)


@task_postrun.connect
def _postrun(**_kwargs) -> None:
    if _watchdog is not None:
        _watchdog.on_task(-1)
