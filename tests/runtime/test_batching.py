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


@pytest.mark.slow
def test_bfloat16_weights_greedy_equals_hf_fp32_over_the_rounded_weights(tiny_model_dir):
    """DTYPE=bfloat16 on CPU, end to end: /info names the dtype and the 16-bit kernels; greedy text alone and inside
    a batch is HF ``generate`` in fp32 over the bf16-rounded weights, token for token; prompt log-probabilities
    come back (the runner scores them itself: HF's model is gone once its weights are packed)."""
    import torch

    from runtime.engine import native
    from tests.fixtures.models import start_runtime_server
    from tests.runtime.conftest import rounded_reference

    probes = ["def read_config(path):", "class Parser:\n    def", "import sys\nfor line in"]
    with start_runtime_server(tiny_model_dir, env={"DTYPE": "bfloat16"}) as server, httpx.Client(
            base_url=server.base_url, timeout=120) as client:
        info = client.get("/info").json()
        assert (info["model_dtype"], info["kernels"]) == ("bfloat16", f"native-{native.host_isa()}-bf16")
        alone = {p: _tokens(client, p, 16) for p in probes}

        async def together() -> list[list[int]]:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as aclient:
                replies = await asyncio.gather(*(aclient.post("/generate", json={"inputs": p, "parameters": {
                    "max_new_tokens": 16, "details": True, "decoder_input_details": True}}) for p in probes))
            return [r.json()["details"] for r in replies]

        batched = asyncio.run(together())
    reference = rounded_reference(tiny_model_dir, torch.bfloat16)
    for prompt, details in zip(probes, batched, strict=True):
        ids = [t["id"] for t in details["prefill"]]
        expected = reference.generate(torch.tensor([ids]), max_new_tokens=16, min_new_tokens=16, do_sample=False)
        assert alone[prompt] == [t["id"] for t in details["tokens"]] == expected[0, len(ids):].tolist(), prompt
        assert all(t["logprob"] < 0 for t in details["prefill"][1:])


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
