"""One validated request running on the engine: collecting its sequences' results, or streaming them with
heartbeats, and cancelling it when the client goes away. Shared by the OpenAI and TGI routes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.requests import Request

from runtime.engine.params import EngineFailure, FinishReason, GenerationRequest, TokenEvent
from runtime.errors import ClientGone, GenerationFailed
from runtime.state import RuntimeState

log = logging.getLogger("runtime.http")


@dataclass
class SequenceResult:
    index: int
    events: list[TokenEvent]
    text: str
    finish_reason: FinishReason | None
    seed: int | None
    prompt_tokens: list | None

    @property
    def token_count(self) -> int:
        return len(self.events)


class GenerationRun:
    """One validated request running on the engine, with metrics and cancellation."""

    def __init__(self, state: RuntimeState, request: GenerationRequest, *, n: int = 1) -> None:
        self.state = state
        self.request = request
        self.n = n
        self.handle = state.loaded.engine.submit(request, n=n)
        self.results: dict[int, list[TokenEvent]] = {i: [] for i in range(n)}
        self.done: set[int] = set()
        self._recorded = False

    def cancel(self) -> None:
        """Stop the sequences still generating (their engine slots are freed before the next step)."""
        if len(self.done) < self.n:
            self.handle.cancel()

    def _record(self) -> None:
        if self._recorded:
            return
        self._recorded = True
        end = time.monotonic()
        for stream in self.handle.streams:
            events = self.results[stream.index]
            self.state.metrics.observe_finished(
                arrival=stream.arrival,
                first_token_at=stream.first_token_at,
                end=end,
                prompt_tokens=self.request.prompt_len,
                generated=len(events),
                max_new_tokens=self.request.params.max_new_tokens,
                finish=events[-1].finish_reason if events else None,
            )

    def _take(self, item: tuple[int, TokenEvent | EngineFailure]) -> tuple[int, TokenEvent]:
        index, event = item
        if isinstance(event, EngineFailure):
            self.state.metrics.request_failure.labels("generation").inc()
            self.handle.cancel()
            raise GenerationFailed(event.message)
        self.results[index].append(event)
        if event.finish_reason is not None:
            self.done.add(index)
        return index, event

    def result(self, index: int) -> SequenceResult:
        events = self.results[index]
        last = events[-1]
        return SequenceResult(
            index=index,
            events=events,
            text=last.output_text or "",
            finish_reason=last.finish_reason,
            seed=last.seed,
            prompt_tokens=events[0].prompt_tokens,
        )

    async def collect(self, http_request: Request) -> list[SequenceResult]:
        """Wait for every sequence; a client disconnect cancels the request (frees the slots)."""
        watcher = asyncio.create_task(_wait_disconnect(http_request))
        try:
            while len(self.done) < self.n:
                getter = asyncio.ensure_future(self.handle.queue.get())
                finished, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in finished:
                    getter.cancel()
                    self.handle.cancel()
                    log.info("client disconnected; cancelled request %s", self.request.request_id)
                    raise ClientGone("client disconnected before the response was ready")
                self._take(getter.result())
                while not self.handle.queue.empty():
                    self._take(self.handle.queue.get_nowait())
        finally:
            watcher.cancel()
            if len(self.done) < self.n:
                self.handle.cancel()
        self._record()
        return [self.result(i) for i in range(self.n)]

    async def stream(self) -> AsyncIterator[list[tuple[int, TokenEvent]] | None]:
        """Yield batches of ready events; ``None`` is a heartbeat (nothing for SSE_KEEPALIVE_INTERVAL seconds).

        Closing the iterator early (client gone: Starlette cancels the response task) cancels the request.
        """
        queue = self.handle.queue
        heartbeat = _Heartbeat(queue, self.state.settings.sse_keepalive_interval)
        try:
            while len(self.done) < self.n:
                item = await queue.get()
                if item is _BEAT:
                    yield None
                    continue
                heartbeat.touch()
                batch: list[tuple[int, TokenEvent]] = []
                try:
                    batch.append(self._take(item))
                    while not queue.empty():
                        item = queue.get_nowait()
                        if item is not _BEAT:
                            batch.append(self._take(item))
                except GenerationFailed:
                    if batch:  # tokens generated before the failure still reach the client, then the error
                        yield batch
                    raise
                yield batch
        finally:
            heartbeat.cancel()
            if len(self.done) < self.n:
                self.handle.cancel()
                log.info("stream closed early; cancelled request %s", self.request.request_id)
            else:
                self._record()


_BEAT = object()
"""Queue marker: time for an SSE heartbeat."""


class _Heartbeat:
    """Puts ``_BEAT`` into a stream's queue once nothing has arrived for ``interval`` seconds.

    One timer per interval instead of an ``asyncio.timeout`` around every ``queue.get()``: a per-event timeout is
    created, rescheduled and exited once per token per stream, on the event loop that shares the CPU with the
    model."""

    def __init__(self, queue: asyncio.Queue, interval: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = queue
        self._interval = interval
        self._last = self._loop.time()
        self._handle = self._loop.call_at(self._last + interval, self._fire)

    def touch(self) -> None:
        self._last = self._loop.time()

    def _fire(self) -> None:
        now = self._loop.time()
        if now - self._last >= self._interval:
            self._queue.put_nowait(_BEAT)
            self._last = now
        self._handle = self._loop.call_at(self._last + self._interval, self._fire)

    def cancel(self) -> None:
        self._handle.cancel()


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
