"""A real instruct model through the runtime: SmolLM2-135M-Instruct, served by `python -m runtime` unchanged.

Random weights hide what only meaning shows: a chat template applied wrong, a prompt tokenized twice over, a
dequantization that is off. Here the model must answer a question correctly, its greedy output must be transformers'
`generate` token for token (alone and inside a busy batch), the prompt the chat route builds must be
`apply_chat_template`'s, and the same model served straight from its GGUF file must say exactly the same.

The model is built once per machine (tests/fixtures/models.py: `endpointctl dev model`'s code path) and one server
on it is shared by the session's real-model tests; `base_url` points this module's clients (tests/runtime/conftest.py)
at it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.fixtures.models import (
    FRANCE_QUESTION,
    RuntimeServer,
    chat_prompt,
    chat_prompt_ids,
    start_runtime_server,
)

pytestmark = [pytest.mark.realmodel]

# Varied on purpose: a fact, verse, a system prompt, translation, arithmetic, advice, a multi-turn chat, a summary,
# another language, code.
CONVERSATIONS = [
    [{"role": "user", "content": FRANCE_QUESTION}],
    [{"role": "user", "content": "Write a haiku about the sea."}],
    [{"role": "system", "content": "You are a terse assistant."},
     {"role": "user", "content": "List three primary colors."}],
    [{"role": "user", "content": "Translate 'good morning' into Spanish."}],
    [{"role": "user", "content": "What is 12 times 7?"}],
    [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello! How can I help you today?"},
     {"role": "user", "content": "Tell me a fun fact about octopuses."}],
    [{"role": "user", "content": "Écris une phrase en français sur le printemps."}],
    [{"role": "user", "content": "Write a Python function that returns the square of a number."}],
]
NEW_TOKENS = 20


@pytest.fixture(scope="module")
def base_url(real_model_server: RuntimeServer) -> str:
    return real_model_server.base_url


@pytest.fixture
def tokenizer(real_model_tokenizer):
    return real_model_tokenizer


def _generate_ids(http: httpx.Client, tokenizer, messages: list[dict], n: int) -> list[int]:
    """Greedy tokens from TGI's /generate on the rendered chat prompt (details give the ids)."""
    resp = http.post("/generate", json={"inputs": chat_prompt(tokenizer, messages),
                                        "parameters": {"max_new_tokens": n, "details": True}})
    assert resp.status_code == 200, resp.text
    return [t["id"] for t in resp.json()["details"]["tokens"]]


def test_it_answers_the_capital_of_france_through_the_openai_sdk(openai_client) -> None:
    reply = openai_client.chat.completions.create(model="tgi", temperature=0, max_tokens=32,
                                           messages=[{"role": "user", "content": FRANCE_QUESTION}])
    answer = reply.choices[0].message.content
    assert "Paris" in answer, answer
    assert answer[0].isupper() and answer.rstrip().endswith("."), answer  # a sentence, not a fragment
    assert reply.choices[0].finish_reason == "stop"  # it ended by itself (EOS), well before max_tokens
    stream = openai_client.chat.completions.create(model="tgi", temperature=0, max_tokens=32, stream=True,
                                                   messages=[{"role": "user", "content": FRANCE_QUESTION}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == answer


def test_the_chat_prompt_is_apply_chat_template_exactly(http: httpx.Client, tokenizer) -> None:
    conversations = [*CONVERSATIONS, [{"role": "system", "content": "Answer in French."},
                                      {"role": "user", "content": "  spaces, tabs\tand\nnewlines  "}]]
    for messages in conversations:
        resp = http.post("/tokenize", json={"messages": messages})
        assert resp.status_code == 200, resp.text
        assert resp.json()["tokens"] == chat_prompt_ids(tokenizer, messages), messages
    # The chat route itself counts the same prompt (no BOS added twice, no template applied twice).
    resp = http.post("/v1/chat/completions", json={"messages": CONVERSATIONS[2], "max_tokens": 1})
    assert resp.json()["usage"]["prompt_tokens"] == len(chat_prompt_ids(tokenizer, CONVERSATIONS[2]))


@pytest.mark.slow
def test_greedy_output_is_transformers_generate_alone_and_batched(real_model_dir: Path,
                                                                  real_model_server: RuntimeServer,
                                                                  http: httpx.Client, tokenizer) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(real_model_dir, dtype=torch.float32).eval()
    expected = []
    for messages in CONVERSATIONS:
        ids = torch.tensor([chat_prompt_ids(tokenizer, messages)])
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)
        expected.append(out[0, ids.shape[1]:].tolist())
    del model

    alone = [_generate_ids(http, tokenizer, messages, NEW_TOKENS) for messages in CONVERSATIONS]
    for messages, got, want in zip(CONVERSATIONS, alone, expected, strict=True):
        assert got == want, (messages[-1]["content"], tokenizer.decode(got), tokenizer.decode(want))

    async def batched() -> list[list[int]]:
        async with httpx.AsyncClient(base_url=real_model_server.base_url, timeout=120) as client:
            async def one(messages: list[dict]) -> list[int]:
                resp = await client.post("/generate", json={"inputs": chat_prompt(tokenizer, messages), "parameters": {
                    "max_new_tokens": NEW_TOKENS, "details": True}})
                assert resp.status_code == 200, resp.text
                return [t["id"] for t in resp.json()["details"]["tokens"]]

            # Sampled requests of other lengths join and leave around the greedy ones.
            filler = [client.post("/v1/chat/completions", json={
                "messages": [{"role": "user", "content": f"Tell me about the number {i}."}],
                "max_tokens": 4 + 3 * i, "temperature": 0.8, "seed": i}) for i in range(6)]
            results = await asyncio.gather(*filler, *(one(m) for m in CONVERSATIONS))
            return list(results[len(filler):])

    for messages, got, want in zip(CONVERSATIONS, asyncio.run(batched()), expected, strict=True):
        assert got == want, (messages[-1]["content"], tokenizer.decode(got), tokenizer.decode(want))


@pytest.mark.slow
def test_a_repository_of_only_the_gguf_file_is_served_the_same(real_model_gguf_dir: Path, http: httpx.Client,
                                                               tokenizer) -> None:
    """The shipped GGUF, alone in its directory, dequantized at start-up: the same weights as the snapshot built
    from it, so the same greedy tokens."""
    assert sorted(p.name for p in real_model_gguf_dir.iterdir()) == ["SmolLM2-135M-Instruct.Q4_1.gguf"]
    with start_runtime_server(real_model_gguf_dir, env={"MAX_TOTAL_TOKENS": "2048"}) as gguf_server:
        assert "serving" in gguf_server.log() and "(the only .gguf file), dequantized" in gguf_server.log()
        with httpx.Client(base_url=gguf_server.base_url, timeout=120) as gguf_http:
            reply = gguf_http.post("/v1/chat/completions", json={
                "messages": [{"role": "user", "content": FRANCE_QUESTION}], "max_tokens": 32, "temperature": 0}).json()
            assert "Paris" in reply["choices"][0]["message"]["content"], reply
            for messages in CONVERSATIONS[1:4]:
                assert _generate_ids(gguf_http, tokenizer, messages, 12) == _generate_ids(http, tokenizer, messages, 12)
            assert gguf_http.get("/info").json()["model_dtype"] == "float32"
