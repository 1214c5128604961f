"""The official openai SDK against a live runtime on the tiny model: chat and completions, sync and async,
streaming, n, logprobs, stop strings, seeds, usage, 32 concurrent streams."""

from __future__ import annotations

import asyncio

import pytest

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Write a function."}]


def test_chat_completion_greedy(openai_client):
    first = openai_client.chat.completions.create(model="tgi", messages=MESSAGES, max_tokens=12, temperature=0)
    second = openai_client.chat.completions.create(model="dummy", messages=MESSAGES, max_tokens=12, temperature=0)
    assert first.object == "chat.completion"
    assert first.id != second.id
    assert first.model == "tgi"
    choice = first.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content == second.choices[0].message.content
    assert choice.finish_reason in ("stop", "length")
    assert first.usage.completion_tokens <= 12
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    assert first.usage.prompt_tokens > 5


def test_chat_stream_matches_non_stream(openai_client):
    full = openai_client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=16, temperature=0)
    chunks = list(
        openai_client.chat.completions.create(
            model="m", messages=MESSAGES, max_tokens=16, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    content_chunks = [c for c in chunks if c.choices]
    finishes = [c.choices[0].finish_reason for c in content_chunks]
    assert finishes[-1] == full.choices[0].finish_reason
    assert all(f is None for f in finishes[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert text == full.choices[0].message.content
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage.completion_tokens == full.usage.completion_tokens
    assert usage_chunk.usage.prompt_tokens == full.usage.prompt_tokens


def test_n_choices(openai_client):
    greedy = openai_client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=8, temperature=0, n=2)
    assert [c.index for c in greedy.choices] == [0, 1]
    assert greedy.choices[0].message.content == greedy.choices[1].message.content
    sampled = openai_client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=24, temperature=1.0, n=2, seed=7)
    assert sampled.choices[0].message.content != sampled.choices[1].message.content
    assert 2 <= sampled.usage.completion_tokens <= 48


def test_n_choices_streaming(openai_client):
    stream = openai_client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=6, temperature=0, n=2, stream=True)
    texts = {0: "", 1: ""}
    finished = set()
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finished.add(choice.index)
    assert finished == {0, 1}
    assert texts[0] == texts[1] and texts[0]


def test_logprobs(openai_client):
    resp = openai_client.chat.completions.create(
        model="m", messages=MESSAGES, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3
    )
    content = resp.choices[0].logprobs.content
    assert len(content) == resp.usage.completion_tokens
    for item in content:
        assert item.logprob <= 0.0
        assert len(item.top_logprobs) == 3
        # greedy: the chosen token is the most likely one
        assert item.logprob == pytest.approx(item.top_logprobs[0].logprob)
        assert item.top_logprobs[0].logprob >= item.top_logprobs[1].logprob >= item.top_logprobs[2].logprob


def test_completions_logprobs_and_echo(openai_client):
    resp = openai_client.completions.create(model="m", prompt="def parse(", max_tokens=5, temperature=0, logprobs=2, echo=True)
    choice = resp.choices[0]
    assert choice.text.startswith("def parse(")
    assert len(choice.logprobs.tokens) == resp.usage.completion_tokens == 5
    assert all(len(t) == 2 for t in choice.logprobs.top_logprobs)
    assert resp.object == "text_completion"


def test_stop_string_across_tokens(openai_client):
    base = openai_client.completions.create(model="m", prompt="import os\n", max_tokens=20, temperature=0, extra_body={"ignore_eos": True})
    text = base.choices[0].text
    assert len(text) >= 8
    # A stop string that starts inside one token and ends inside a later one.
    stop = text[3:7]
    cut = text.index(stop)
    stopped = openai_client.completions.create(model="m", prompt="import os\n", max_tokens=20, temperature=0, stop=[stop])
    assert stopped.choices[0].text == text[:cut]
    assert stopped.choices[0].finish_reason == "stop"
    streamed = openai_client.completions.create(model="m", prompt="import os\n", max_tokens=20, temperature=0,
                                                stop=[stop], stream=True)
    pieces = list(streamed)
    assert "".join(p.choices[0].text for p in pieces) == text[:cut]
    assert pieces[-1].choices[0].finish_reason == "stop"


def test_seed_reproducible(openai_client):
    def sample(seed: int) -> str:
        resp = openai_client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=16, temperature=1.0,
                                                     top_p=0.95, seed=seed)
        return resp.choices[0].message.content

    assert sample(1234) == sample(1234)
    assert sample(1234) != sample(4321)


def test_multi_turn_and_tool_role(openai_client):
    resp = openai_client.chat.completions.create(
        model="m",
        messages=[
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "hello"}]},
            {"role": "assistant", "content": "hi"},
            {"role": "tool", "content": "42", "tool_call_id": "call_1"},
            {"role": "user", "content": "again"},
        ],
        max_tokens=4,
        temperature=0,
    )
    assert resp.usage.prompt_tokens > 10


def test_models_list(openai_client, runtime_server):
    models = openai_client.models.list()
    assert len(models.data) == 1
    assert models.data[0].id


async def test_async_client_chat_and_completion(async_openai_client):
    chat = await async_openai_client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=5, temperature=0)
    comp = await async_openai_client.completions.create(model="m", prompt="class A:", max_tokens=5, temperature=0)
    assert chat.choices[0].message.content
    assert comp.choices[0].text
    stream = await async_openai_client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=5,
                                                               temperature=0, stream=True)
    text = ""
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    assert text == chat.choices[0].message.content
    await async_openai_client.close()


@pytest.mark.slow
async def test_32_concurrent_streams(async_openai_client, openai_client):
    prompts = [f"def function_{i}(value):" for i in range(32)]
    alone = {
        p: openai_client.completions.create(model="m", prompt=p, max_tokens=12, temperature=0, extra_body={"ignore_eos": True}).choices[0].text
        for p in prompts[:4]
    }

    async def one(prompt: str) -> tuple[str, str, int]:
        stream = await async_openai_client.completions.create(
            model="m", prompt=prompt, max_tokens=12, temperature=0, extra_body={"ignore_eos": True}, stream=True,
            stream_options={"include_usage": True},
        )
        text, tokens, finish = "", 0, None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].text
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
        assert finish == "length"
        return prompt, text, tokens

    results = await asyncio.gather(*(one(p) for p in prompts))
    assert all(tokens == 12 for _, _, tokens in results)
    for prompt, text, _ in results:
        if prompt in alone:
            assert text == alone[prompt]
    await async_openai_client.close()


def test_streamed_chunks_carry_a_steps_tokens(openai_client):
    """A decode step that accepts n-gram drafts yields several tokens of a sequence at once; they travel as one
    chunk (as vLLM's server sends them). With logprobs (no drafts then: they need the whole distribution) each
    chunk's lists and text offsets run on across chunks exactly as in the non-streamed body."""
    kwargs = {"model": "m", "prompt": "def f(x):\n    return x\n" * 3, "max_tokens": 32, "temperature": 0,
              "extra_body": {"ignore_eos": True}}
    full = openai_client.completions.create(**kwargs).choices[0]
    chunks = list(openai_client.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert chunks[-1].usage.completion_tokens == 32 and len(texts) < 32  # drafts accepted: merged chunks
    assert "".join(texts) == full.text

    kwargs["logprobs"] = 1
    full = openai_client.completions.create(**kwargs).choices[0]
    chunks = [c for c in openai_client.completions.create(**kwargs, stream=True) if c.choices]
    assert sum(len(c.choices[0].logprobs.tokens) for c in chunks) == 32
    for field in ("tokens", "token_logprobs", "text_offset"):
        assert [v for c in chunks for v in getattr(c.choices[0].logprobs, field)] == getattr(full.logprobs, field)
    assert chunks[-1].choices[0].finish_reason == "length"

    chat = [c for c in openai_client.chat.completions.create(
        model="m", messages=MESSAGES, max_tokens=24, temperature=0, stream=True, stream_options={"include_usage": True},
        extra_body={"ignore_eos": True})]
    full_chat = openai_client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=24, temperature=0,
                                                      extra_body={"ignore_eos": True})
    assert chat[-1].usage.completion_tokens == 24
    assert "".join(c.choices[0].delta.content or "" for c in chat if c.choices) == full_chat.choices[0].message.content
