"""Continuous batching seen from outside: greedy output is token-for-token the same alone and inside a busy
batch, and a client that goes away frees its slot (observed through /metrics)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.runtime.conftest import metric_value


def _tokens(client: httpx.Client, prompt: str, n: int) -> list[int]:
    resp = client.post("/generate", json={"inputs": prompt, "parameters": {"max_new_tokens": n, "details": True}})
    assert resp.status_code == 200, resp.text
    return [t["id"] for t in resp.json()["details"]["tokens"]]


@pytest.mark.slow
def test_greedy_batched_equals_alone(base_url, http):
    probes = ["def read_config(path):", "class Parser:\n    def", "import sys\nfor line in", "x = [i * 2 for"]
    alone = {p: _tokens(http, p, 24) for p in probes}

    async def busy() -> dict[str, list[int]]:
        async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
            async def one(prompt: str, n: int):
                resp = await client.post("/generate", json={"inputs": prompt, "parameters": {
                    "max_new_tokens": n, "details": True}})
                assert resp.status_code == 200, resp.text
                return prompt, [t["id"] for t in resp.json()["details"]["tokens"]]

            # Filler requests of other lengths (and some sampled ones) join and leave around the probes.
            filler = [client.post("/generate", json={"inputs": f"value_{i} = {i} *", "parameters": {
                "max_new_tokens": 8 + 5 * i, "do_sample": i % 2 == 0, "seed": i if i % 2 == 0 else None}})
                for i in range(12)]
            probes_tasks = [one(p, 24) for p in probes]
            results = await asyncio.gather(*filler, *probes_tasks)
            return dict(results[len(filler):])

    batched = asyncio.run(busy())
    metrics = http.get("/metrics").text
    assert metric_value(metrics, "endpointctl_batch_max_size_reached") > 1
    for p in probes:
        assert batched[p] == alone[p], p


def _running(http: httpx.Client) -> float:
    return metric_value(http.get("/metrics").text, "vllm:num_requests_running")


def _wait_idle(http: httpx.Client, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _running(http) == 0:
            return True
        time.sleep(0.05)
    return False


def test_stream_disconnect_frees_slot(base_url, http):
    assert _wait_idle(http)
    # The server is shared with other test modules: count only the tokens generated from here on.
    tokens_before = metric_value(http.get("/metrics").text, "vllm:generation_tokens_total")
    with httpx.Client(base_url=base_url, timeout=60) as client:
        with client.stream("POST", "/v1/completions", json={"prompt": "def f():", "max_tokens": 1500,
                                                             "ignore_eos": True, "stream": True}) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()
            seen = 0
            for line in lines:
                if line.startswith("data:"):
                    seen += 1
                if seen >= 3:
                    break
            assert _running(http) == 1
    # The connection is closed: the engine must drop the sequence long before 1500 tokens are done.
    assert _wait_idle(http)
    tokens_after = metric_value(http.get("/metrics").text, "vllm:generation_tokens_total")
    assert tokens_after - tokens_before < 1000


def test_non_stream_disconnect_frees_slot(base_url, http):
    assert _wait_idle(http)
    with httpx.Client(base_url=base_url, timeout=httpx.Timeout(60, read=0.5)) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post("/generate", json={"inputs": "def f():", "parameters": {"max_new_tokens": 1800}})
    assert _wait_idle(http)
