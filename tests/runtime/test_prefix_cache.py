"""Automatic prefix caching: prompts reuse the KV blocks of prefixes seen before and prefill only the rest, with
greedy output token for token what it is without the cache (the real model), reported in OpenAI's usage and in
vLLM's Prometheus counters."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
import torch

from tests.runtime.conftest import metric_value

SYSTEM = ("You are a meticulous assistant for a company that sells garden tools. Answer briefly, politely and "
          "only about the catalogue: spades, rakes, hoes, trowels, pruning shears, wheelbarrows, watering cans. ")


def _engine(model, tokenizer, *, prefix_caching: bool):
    from runtime.engine.model import LeanDecoderRunner
    from runtime.engine.scheduler import Engine, EngineLimits

    runner = LeanDecoderRunner(model, max_slots=8, max_total_tokens=1024, prefix_caching=prefix_caching)
    limits = EngineLimits(max_batch_size=8, max_batch_prefill_tokens=4096,
                          max_batch_total_tokens=runner.kv.capacity_tokens, max_total_tokens=1024)
    return Engine(runner, tokenizer, limits=limits, eos_token_ids=[tokenizer.eos_token_id], speculate=3,
                  prefix_caching=prefix_caching)


async def _conversation(engine, prompts: list[list[int]]) -> tuple[list[list[int]], list[int]]:
    """The first prompt alone; then, while a long unrelated answer is being decoded, the others arrive together
    (their prefills join a running batch). Returns each request's greedy tokens and cached prompt tokens."""
    from runtime.engine.params import GenerationRequest, SamplingParams

    engine.start(asyncio.get_running_loop())

    def submit(i: int, max_new: int):
        return engine.submit(GenerationRequest(f"r{i}", prompts[i], SamplingParams(max_new_tokens=max_new,
                                                                                    temperature=0)))

    async def drain(handle, started: asyncio.Event | None = None) -> tuple[list[int], int]:
        ids, cached = [], 0
        while True:
            _, event = await handle.queue.get()
            if not ids:
                cached = event.cached_tokens
                if started is not None:
                    started.set()
            ids.append(event.token_id)
            if event.finish_reason is not None:
                return ids, cached

    try:
        first = await drain(submit(0, 24))
        started = asyncio.Event()
        long_one = asyncio.create_task(drain(submit(1, 64), started))
        await started.wait()
        rest = await asyncio.gather(*(drain(submit(i, 24)) for i in range(2, len(prompts))))
        results = [first, await long_one, *rest]
        return [r[0] for r in results], [r[1] for r in results]
    finally:
        engine.stop()


def test_greedy_output_is_the_same_with_and_without_the_prefix_cache(real_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(real_model_dir)
    model = AutoModelForCausalLM.from_pretrained(real_model_dir, dtype=torch.float32).eval()

    def chat(*turns: str) -> list[int]:
        messages = [{"role": "system", "content": SYSTEM * 3}]
        for i, text in enumerate(turns):
            messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    prompts = [
        chat("Which rake is best for leaves?"),
        tokenizer("Write a long poem about the sea and the wind, with many verses.")["input_ids"],
        chat("Do you sell watering cans?"),  # shares the system prompt with the first
        chat("Which rake is best for leaves?"),  # the first again: every full block cached
        chat("Which rake is best for leaves?", "The leaf rake.", "And for gravel?"),  # a later turn
    ]
    with_cache = _engine(model, tokenizer, prefix_caching=True)
    without = _engine(model, tokenizer, prefix_caching=False)
    got, cached = asyncio.run(_conversation(with_cache, prompts))
    want, uncached = asyncio.run(_conversation(without, prompts))
    assert got == want
    assert uncached == [0] * 5 and without.stats.prefix_cache_hits == 0
    def common_blocks(a: list[int], b: list[int]) -> int:  # positions of the full blocks two prompts share
        same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        return same // 16 * 16

    assert cached[0] == 0 and cached[1] == 0
    assert cached[2] == common_blocks(prompts[0], prompts[2]) >= 64  # the system prompt
    # The first prompt again: every full block; when it is all full blocks, all but the last token (whose logits
    # start generation), recomputed in a copy of the last block.
    n = len(prompts[3])
    assert cached[3] == (n - 1 if n % 16 == 0 else n // 16 * 16)
    assert cached[4] >= common_blocks(prompts[0], prompts[4])  # the later turn: the whole earlier one
    stats = with_cache.stats
    assert stats.prefix_cache_hits == sum(cached)
    assert stats.prefix_cache_queries == sum(len(p) for p in prompts)


def test_the_prefix_cache_is_on_by_default_and_prefix_caching_0_turns_it_off(monkeypatch):
    from runtime.config import RuntimeSettings, parse_settings

    assert RuntimeSettings().prefix_caching is True
    monkeypatch.setenv("PREFIX_CACHING", "0")  # TGI's variable
    assert parse_settings([]).prefix_caching is False


@pytest.fixture
def unique_system() -> str:
    """A system prompt no other test sent (the session's server keeps its cache between tests)."""
    return f"Session {uuid.uuid4().hex}. " + SYSTEM * 2


def test_usage_reports_cached_prompt_tokens_and_metrics_count_them(http: httpx.Client, unique_system: str):
    def ask(question: str, **extra) -> dict:
        body = {"messages": [{"role": "system", "content": unique_system}, {"role": "user", "content": question}],
                "max_tokens": 4, "temperature": 0, **extra}
        response = http.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    before = http.get("/metrics").text
    first = ask("Hello?")
    assert first["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    second = ask("Hello again?")
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert 32 <= cached < second["usage"]["prompt_tokens"] and cached % 16 == 0
    after = http.get("/metrics").text
    hits = metric_value(after, "vllm:prefix_cache_hits_total") - metric_value(before, "vllm:prefix_cache_hits_total")
    queries = (metric_value(after, "vllm:prefix_cache_queries_total")
               - metric_value(before, "vllm:prefix_cache_queries_total"))
    assert hits >= cached and queries >= first["usage"]["prompt_tokens"] + second["usage"]["prompt_tokens"]
    assert 0 <= metric_value(after, "vllm:kv_cache_usage_perc") <= 1

    # Streaming: the usage chunk says the same.
    body = {"messages": [{"role": "system", "content": unique_system}, {"role": "user", "content": "Hi?"}],
            "max_tokens": 4, "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        chunks = [json.loads(line[6:]) for line in response.iter_lines()
                  if line.startswith("data: ") and line != "data: [DONE]"]
    usage = chunks[-1]["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] >= 32

    # Legacy completions too.
    prompt = unique_system + " Question: what do you sell?"
    http.post("/v1/completions", json={"prompt": prompt, "max_tokens": 2})
    again = http.post("/v1/completions", json={"prompt": prompt, "max_tokens": 2}).json()
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] >= 32


def test_info_reports_the_pool_and_the_cache_setting(http: httpx.Client):
    info = http.get("/info").json()
    assert info["prefix_caching"] is True
    assert info["max_batch_total_tokens"] % 16 == 0 and info["max_batch_total_tokens"] >= info["max_total_tokens"]
