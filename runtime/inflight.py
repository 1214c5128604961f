"""The one count of generation requests in flight, and the MAX_CONCURRENT_REQUESTS gate in front of it.

Every generation route takes a :class:`Slot` before it submits work to the engine and gives it back when its answer
is over: when the handler returns for a JSON answer, when the body ends for a stream. A streamed answer carries its
slot inside the response (:meth:`Slot.stream`), so a request is counted from admission to its last byte with no
moment between the handler and the first chunk where it is not; the same response cancels the engine work of a
stream its client left before the first chunk. Over the limit the answer is 429 at once: no unbounded queue in
front of the engine's own.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from runtime.errors import Overloaded
from runtime.metrics import RuntimeMetrics
from runtime.sse import SSE_HEADERS


class InFlight:
    """Requests admitted and not yet answered; read by ``/metrics`` (``endpointctl_requests_in_flight``)."""

    def __init__(self, limit: int, metrics: RuntimeMetrics) -> None:
        self.limit = limit
        self.count = 0
        self._metrics = metrics

    def admit(self) -> Slot:
        """A slot for one request, or :class:`Overloaded` (429 with ``Retry-After``) when all are taken."""
        if self.count >= self.limit:
            self._metrics.request_failure.labels("overloaded").inc()
            raise Overloaded(
                f"Model is overloaded: {self.count} requests in flight (MAX_CONCURRENT_REQUESTS={self.limit})",
                headers={"Retry-After": "1"},
            )
        self.count += 1
        self._metrics.request_count.inc()
        return Slot(self)


class Slot:
    """One admitted request's place. Released once, however many times :meth:`release` is called; as a context
    manager it is released when the block ends, unless :meth:`stream` handed it to a response first."""

    __slots__ = ("_owner",)

    def __init__(self, owner: InFlight) -> None:
        self._owner: InFlight | None = owner

    def release(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            owner.count -= 1

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def stream(self, content: AsyncIterable[bytes], *, runs: Iterable[Any]) -> AdmittedStream:
        """Hand this slot to an SSE response over ``content``: the response releases it when it ends, and cancels
        ``runs`` (:class:`~runtime.generation.GenerationRun`) still going then."""
        owner, self._owner = self._owner, None
        if owner is None:
            raise RuntimeError("this slot was already released or handed over")
        return AdmittedStream(content, slot=Slot(owner), runs=list(runs))


class AdmittedStream(StreamingResponse):
    """An SSE response holding its request's slot until the response is over, whether its body ran or not."""

    def __init__(self, content: AsyncIterable[bytes], *, slot: Slot, runs: list[Any]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=SSE_HEADERS)
        self._slot = slot
        self._runs = runs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # A body that started cancels its own run when closed early; one that never started (the client left
            # before the first chunk) leaves that to here. Cancelling a finished run does nothing.
            for run in self._runs:
                run.cancel()
            self._slot.release()
