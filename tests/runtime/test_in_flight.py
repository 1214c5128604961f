"""One in-flight count per replica (``runtime/inflight.py``), used by every generation route: a streamed answer
is counted from admission to its last byte (no gap between the handler and the first chunk in which a request
over MAX_CONCURRENT_REQUESTS would get in), and a client that leaves before the first chunk frees both its slot
and the engine's work. In-process (ASGI) over the real engine thread with a slow fake model."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from runtime.errors import Overloaded
from runtime.inflight import InFlight
from runtime.metrics import RuntimeMetrics
from tests.runtime.fake_engine import FixedRunner, fake_engine_app

STREAMS = {
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True},
    "/v1/completions": {"prompt": "x", "max_tokens": 3, "stream": True},
    "/generate_stream": {"inputs": "x", "parameters": {"max_new_tokens": 3}},
}


class HeldStream:
    """A streamed request driven over raw ASGI whose ``send`` blocks at the response start until ``proceed`` is
    set: the moment between the route handler's return and the body's first chunk, held open. ``leave`` makes the
    client disconnect."""

    def __init__(self, app, path: str, body: dict) -> None:
        self.app = app
        self.path = path
        self.payload = json.dumps(body).encode()
        self.started = asyncio.Event()
        self.proceed = asyncio.Event()
        self.leave = asyncio.Event()
        self.messages: list[dict] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": self.path, "raw_path": self.path.encode(),
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000), "server": ("runtime", 80),
            "headers": [(b"host", b"runtime"), (b"content-type", b"application/json"),
                        (b"content-length", str(len(self.payload)).encode())],
        }
        body_sent = False

        async def receive():
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": self.payload, "more_body": False}
            await self.leave.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            self.messages.append(message)
            if message["type"] == "http.response.start":
                self.started.set()
                await self.proceed.wait()

        await self.app(scope, receive, send)

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body")


@pytest.fixture
async def slow_app(tiny_model_dir):
    async with fake_engine_app(tiny_model_dir, FixedRunner(decode_delay=0.05), max_concurrent_requests=1) as app:
        yield app


@pytest.mark.parametrize("path", list(STREAMS))
async def test_a_stream_holds_its_slot_from_admission_to_its_last_byte(slow_app, path):
    state = slow_app.state.runtime
    held = HeldStream(slow_app, path, STREAMS[path])
    await asyncio.wait_for(held.started.wait(), timeout=30)
    assert state.in_flight.count == 1  # the handler has returned; the body has not started yet
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=slow_app), base_url="http://runtime") as client:
        refused = await client.post("/v1/completions", json={"prompt": "x", "max_tokens": 1})
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1", refused.text
    held.proceed.set()
    await asyncio.wait_for(held.task, timeout=30)
    assert held.messages[0]["status"] == 200 and held.body().count(b"data: ") >= 3
    assert state.in_flight.count == 0


@pytest.mark.parametrize("path", list(STREAMS))
async def test_a_client_gone_before_the_first_chunk_frees_its_slot_and_the_engine(slow_app, path):
    state = slow_app.state.runtime
    engine = state.loaded.engine
    body = json.loads(json.dumps(STREAMS[path]))
    if "parameters" in body:
        body["parameters"]["max_new_tokens"] = 1000
    else:
        body["max_tokens"] = 1000  # 50 s of decoding at 0.05 s a step unless cancelled
    held = HeldStream(slow_app, path, body)
    await asyncio.wait_for(held.started.wait(), timeout=30)
    held.leave.set()
    await asyncio.wait_for(held.task, timeout=30)
    assert held.body() == b""  # the body never started
    assert state.in_flight.count == 0
    for _ in range(100):
        if not engine._running and not engine._waiting:
            break
        await asyncio.sleep(0.05)
    assert not engine._running and not engine._waiting, "the engine still generates for a client gone"


def test_admission_past_the_limit_is_overloaded_and_a_slot_is_released_once():
    metrics = RuntimeMetrics("m")
    gate = InFlight(2, metrics)
    first = gate.admit()
    with gate.admit():
        assert gate.count == 2
        with pytest.raises(Overloaded) as refused:
            gate.admit()
        assert refused.value.headers == {"Retry-After": "1"}
    assert gate.count == 1
    first.release()
    first.release()
    assert gate.count == 0
    with pytest.raises(RuntimeError):
        first.stream(iter(()), runs=[])  # released: nothing left to hand to a response
