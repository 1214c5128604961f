"""What every protocol layer shares: the runtime state, admission (auth, readiness, concurrency), body parsing,
and the driver that runs a request on the engine — collecting results, or streaming them with heartbeats —
and cancels it when the client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
import pydantic
from starlette.requests import Request

from runtime.config import RuntimeSettings
from runtime import jsonbody
from runtime.engine.params import EngineFailure, FinishReason, GenerationRequest, TokenEvent
from runtime.engine.validation import Validator
from runtime.errors import (
    ClientGone,
    GenerationFailed,
    InvalidRequest,
    NotReady,
    Overloaded,
    Unauthorized,
    UnsupportedMediaType,
)
from runtime.metrics import RuntimeMetrics

log = logging.getLogger("runtime.http")

M = TypeVar("M", bound=pydantic.BaseModel)


@dataclass
class RuntimeState:
    settings: RuntimeSettings
    metrics: RuntimeMetrics
    loaded: Any = None  # runtime.engine.loader.LoadedModel once ready
    validator: Validator | None = None
    ready: bool = False
    load_error: str | None = None
    in_flight: int = 0
    started: float = field(default_factory=time.time)

    @property
    def model_name(self) -> str:
        return self.settings.model_name()

    def require_ready(self, kind: str | None = "generate") -> Any:
        if not self.ready:
            raise NotReady(self.load_error or "Model is loading; retry when /health answers 200")
        if kind is not None and self.loaded.kind != kind:
            what = "a text-generation model" if kind == "generate" else "an embedding model"
            from runtime.errors import NotFound

            raise NotFound(f"This route needs {what}; {self.model_name} is served as '{self.loaded.kind}'")
        return self.loaded

    def check_api_key(self, request: Request) -> None:
        key = self.settings.api_key
        if not key:
            return
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        if not hmac.compare_digest(token.encode(), key.encode()):
            raise Unauthorized("Invalid or missing API key (send 'Authorization: Bearer <API_KEY>')")

    @contextlib.contextmanager
    def admit(self) -> Any:
        """Count a request in flight; over MAX_CONCURRENT_REQUESTS answer 429 at once (no unbounded queue)."""
        limit = self.settings.max_concurrent_requests
        if self.in_flight >= limit:
            self.metrics.request_failure.labels("overloaded").inc()
            raise Overloaded(
                f"Model is overloaded: {self.in_flight} requests in flight (MAX_CONCURRENT_REQUESTS={limit})",
                headers={"Retry-After": "1"},
            )
        self.in_flight += 1
        self.metrics.request_count.inc()
        try:
            yield
        finally:
            self.in_flight -= 1


async def read_json(request: Request) -> Any:
    """The request body as strict JSON (:mod:`runtime.jsonbody`): not JSON, not UTF-8, ``NaN``, lone surrogates or
    nesting past MAX_JSON_DEPTH are a 400, a body declared as something else than JSON a 415."""
    check_json_content_type(request.headers.get("content-type"))
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequest("Request body is empty: send a JSON object")
    max_depth = request.app.state.runtime.settings.max_json_depth
    try:
        return jsonbody.decode(raw, max_depth=max_depth)
    except jsonbody.JSONInputError as exc:
        raise InvalidRequest(exc.message, param=exc.param) from exc


def check_json_content_type(value: str | None) -> None:
    """No Content-Type is taken as JSON (raw sockets, old clients); a declared one must be JSON (TGI answers 415 too).

    ``application/json`` and any ``+json`` type, parameters such as ``charset`` ignored."""
    if value is None or not value.strip():
        return
    media = value.split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return
    raise UnsupportedMediaType("Content-Type must be application/json")


async def parse_body(request: Request, model: type[M], *, status_cls: type = InvalidRequest) -> M:
    """Parse a JSON body into ``model``; every problem becomes a 4xx naming the parameter."""
    return validate_body(await read_json(request), model, status_cls=status_cls)


def validate_body(data: Any, model: type[M], *, status_cls: type = InvalidRequest) -> M:
    if not isinstance(data, dict):
        raise InvalidRequest("Request body must be a JSON object")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        param = _input_param(data, err)
        if err["type"] == "extra_forbidden":
            raise InvalidRequest(
                f"Unsupported parameter: '{param}' is not supported by this server", param=param
            ) from exc
        # Integers past 64 bits arrive as floats (orjson), which pydantic calls an unparsable "input string".
        reason = "integer out of range" if err["type"] == "int_parsing_size" else err["msg"]
        raise status_cls(f"Invalid value for '{param}': {reason}", param=param) from exc


def json_body(*models: type[pydantic.BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads its body itself (:func:`parse_body`: strict JSON, typed 4xx rather
    than FastAPI's own parsing), so that /openapi.json still documents what it accepts. Definitions are inlined:
    the schema stands alone, as generated clients and fuzzers read it. Several models: any one of them."""
    schemas = []
    for model in models:
        schema = model.model_json_schema()
        schemas.append(_inline_refs(schema, schema.pop("$defs", {})))
    body = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": body}}}}


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: _inline_refs(value, defs) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline_refs(item, defs) for item in node]
    return node


def _input_param(data: Any, err: Any) -> str | None:
    """The error's location as a path into the request: pydantic's ``loc`` also names the union member that failed
    (``messages.0.content.str``), which is no parameter of the client's; such steps are left out."""
    loc = err["loc"]
    parts: list[str | int] = []
    node = data
    for position, step in enumerate(loc):
        if isinstance(node, dict) and isinstance(step, str) and step in node:
            node = node[step]
        elif isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
            node = node[step]
        elif not (position == len(loc) - 1 and err["type"] == "missing"):
            continue  # a union member's tag, not a place in the input
        parts.append(step)
    return jsonbody.join_path(None, parts)


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

    One timer per interval instead of an ``asyncio.timeout`` around every ``queue.get()``: with 32 streams the
    per-event timeout (create, reschedule, exit) was ~8% of the event loop's time, which on two cores is taken
    from the decode step."""

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


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(data: Any) -> bytes:
    """One SSE event. orjson: the chunk is serialised once per token per stream, and json.dumps was ~6% of the
    event loop's time at 32 streams (same compact UTF-8 output; non-finite floats become null, valid JSON)."""
    return b"data: " + orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS) + b"\n\n"


HEARTBEAT = b": keep-alive\n\n"

