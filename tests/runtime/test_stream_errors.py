"""Errors after the response has started: the serving layer in-process (ASGI), on the real tiny tokenizer, with
an engine whose model fails mid-generation. The client must get an error event in its route family's shape (and
``[DONE]`` on OpenAI routes), never a silently truncated stream; a non-streaming request gets a 500 envelope.
Also: SSE heartbeats are sent while a request waits."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.runtime.fake_engine import NEXT_TOKEN, FixedRunner, fake_engine_app


@pytest.fixture
async def app_client(tiny_model_dir):
    async with fake_engine_app(tiny_model_dir, FixedRunner(fail_decode=True), sse_keepalive_interval=0.05) as app:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://runtime") as client:
            yield client


def _events(body: str) -> list[str]:
    return [line[6:] for line in body.splitlines() if line.startswith("data: ")]


async def test_openai_stream_error_is_an_envelope_then_done(app_client):
    resp = await app_client.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": True})
    assert resp.status_code == 200
    events = _events(resp.text)
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert "simulated device failure" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    # the first token (from prefill) was streamed before the failure
    assert any("chat.completion.chunk" in e for e in events[:-2])


async def test_tgi_stream_error_event(app_client):
    resp = await app_client.post("/generate_stream", json={"inputs": "x", "parameters": {"max_new_tokens": 5}})
    events = _events(resp.text)
    last = json.loads(events[-1])
    assert last["error_type"] == "generation" and "simulated" in last["error"]
    assert json.loads(events[0])["token"]["id"] == NEXT_TOKEN


async def test_non_stream_failure_is_500_envelope(app_client):
    resp = await app_client.post("/v1/completions", json={"prompt": "x", "max_tokens": 5})
    assert resp.status_code == 500
    assert "simulated" in resp.json()["error"]["message"]
    tgi = await app_client.post("/generate", json={"inputs": "x", "parameters": {"max_new_tokens": 5}})
    assert tgi.status_code == 500 and tgi.json()["error_type"] == "generation"


async def test_heartbeats_while_waiting(app_client):
    """With SSE_KEEPALIVE_INTERVAL=0.05 s and a request stuck in the queue, comments keep the connection alive."""
    engine = app_client._transport.app.state.runtime.loaded.engine
    engine.limits.max_batch_size = 0  # nothing can be admitted: the request waits
    task = asyncio.create_task(app_client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2, "stream": True}))
    await asyncio.sleep(0.5)
    engine.limits.max_batch_size = 4
    engine.wake()
    resp = await asyncio.wait_for(task, timeout=30)
    assert ": keep-alive" in resp.text
    assert _events(resp.text)[-1] == "[DONE]"


async def test_heartbeat_only_after_a_silent_interval():
    """Events keep postponing the heartbeat; silence for the interval produces one, and cancel stops them."""
    from runtime import generation

    queue: asyncio.Queue = asyncio.Queue()
    beat = generation._Heartbeat(queue, 0.5)
    for _ in range(20):  # an event every 50 ms for a second: never 0.5 s of silence
        await asyncio.sleep(0.05)
        beat.touch()
    assert queue.empty()
    await asyncio.sleep(1.2)
    assert queue.qsize() >= 1 and all(queue.get_nowait() is generation._BEAT for _ in range(queue.qsize()))
    beat.cancel()
    await asyncio.sleep(0.7)
    assert queue.empty()
