"""Errors after the response has started: the serving layer in-process (ASGI), on the real tiny tokenizer, with
an engine whose model fails mid-generation. The client must get an error event in its route family's shape (and
``[DONE]`` on OpenAI routes), never a silently truncated stream; a non-streaming request gets a 500 envelope.
Also: SSE heartbeats are sent while a request waits."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import torch

from runtime.config import RuntimeSettings, resolve_limits
from runtime.engine.loader import LoadedModel
from runtime.engine.scheduler import Engine, EngineLimits
from runtime.engine.validation import Validator
from runtime.server import create_app


class FailingRunner:
    """Prefill works (a fixed next token), the first decode step raises: an engine failure mid-stream."""

    vocab_size = 8192
    device = torch.device("cpu")

    def __init__(self, *, decode_delay: float = 0.0) -> None:
        self.decode_delay = decode_delay

    def prefill(self, slots, prompts):
        logits = torch.zeros(len(prompts), self.vocab_size)
        logits[:, 300] = 1.0
        return logits

    def decode(self, tokens, positions):
        raise RuntimeError("simulated device failure")

    def move_slot(self, src, dst, length):
        return None

    def release(self, slot):
        return None


@pytest.fixture
async def app_client(tiny_model_dir):
    from transformers import AutoTokenizer

    settings = RuntimeSettings(model_id=str(tiny_model_dir), sse_keepalive_interval=0.05)
    app = create_app(settings, load=False)
    state = app.state.runtime
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    limits = resolve_limits(settings, max_position_embeddings=2048, on_gpu=False)
    engine = Engine(FailingRunner(), tokenizer, limits=EngineLimits(
        max_batch_size=4, max_batch_prefill_tokens=limits.max_batch_prefill_tokens,
        max_batch_total_tokens=limits.max_batch_total_tokens, max_total_tokens=limits.max_total_tokens),
        eos_token_ids=[tokenizer.eos_token_id])
    engine.start(asyncio.get_running_loop())
    state.loaded = LoadedModel("generate", tokenizer, limits, "float32", "cpu", None, engine=engine, runner_kind="fake")
    state.validator = Validator(tokenizer, max_input_tokens=limits.max_input_tokens,
                                max_total_tokens=limits.max_total_tokens, max_stop_sequences=4, max_top_n_tokens=5)
    state.ready = True
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://runtime") as client:
        yield client
    engine.stop()


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
    assert json.loads(events[0])["token"]["id"] == 300


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
    from runtime import serving

    queue: asyncio.Queue = asyncio.Queue()
    beat = serving._Heartbeat(queue, 0.5)
    for _ in range(20):  # an event every 50 ms for a second: never 0.5 s of silence
        await asyncio.sleep(0.05)
        beat.touch()
    assert queue.empty()
    await asyncio.sleep(1.2)
    assert queue.qsize() >= 1 and all(queue.get_nowait() is serving._BEAT for _ in range(queue.qsize()))
    beat.cancel()
    await asyncio.sleep(0.7)
    assert queue.empty()
