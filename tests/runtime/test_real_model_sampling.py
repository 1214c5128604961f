"""Stop strings, logprobs, `n` and seeds on a real model: SmolLM2-135M-Instruct behind the session's shared server.

On random weights a stop string is a few characters of noise and a logprob a number nobody can check. Here the
answer is a sentence ("The capital of France is Paris."), so a stop string is a word of it; the logprobs of the
three APIs (chat, completions, TGI) must be one another's and a transformers forward's log-softmax over the same
tokens; sampled answers are different real sentences, the same ones again for the same seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.fixtures.models import FRANCE_QUESTION, RuntimeServer, chat_prompt

pytestmark = [pytest.mark.realmodel]

FRANCE = [{"role": "user", "content": FRANCE_QUESTION}]
HAIKU = [{"role": "user", "content": "Write a haiku about the sea."}]


@pytest.fixture(scope="module")
def base_url(real_model_server: RuntimeServer) -> str:
    return real_model_server.base_url


def _chat(openai_client, messages: list[dict], **kwargs):
    return openai_client.chat.completions.create(model="tgi", messages=messages, **kwargs)


def _streamed_chat(openai_client, messages: list[dict], **kwargs) -> tuple[dict[int, str], dict[int, str]]:
    """Text and finish_reason per choice index of a streamed chat completion."""
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    for chunk in _chat(openai_client, messages, stream=True, **kwargs):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason is not None:
                assert choice.index not in finishes, "a choice finished twice"
                finishes[choice.index] = choice.finish_reason
    return texts, finishes


def _tgi_stream(http: httpx.Client, inputs: str, parameters: dict) -> list[dict]:
    with http.stream("POST", "/generate_stream", json={"inputs": inputs, "parameters": parameters}) as resp:
        assert resp.status_code == 200, resp.read()
        return [json.loads(line[5:]) for line in resp.iter_lines() if line.startswith("data:")]


def test_stop_strings_end_the_text_where_the_stop_string_begins(openai_client, http: httpx.Client,
                                                                real_model_tokenizer) -> None:
    full = _chat(openai_client, FRANCE, max_tokens=32, temperature=0).choices[0].message.content
    # One whole word, one that starts inside " capital" and ends inside " of", and a list whose earlier match wins.
    cases = [["Paris"], ["ital of"], [".", "France"]]
    assert all(any(s in full for s in stop) for stop in cases), full
    for stop in cases:
        cut = min(full.index(s) for s in stop if s in full)
        reply = _chat(openai_client, FRANCE, max_tokens=32, temperature=0, stop=stop).choices[0]
        assert (reply.message.content, reply.finish_reason) == (full[:cut], "stop"), stop
        assert _streamed_chat(openai_client, FRANCE, max_tokens=32, temperature=0, stop=stop) == (
            {0: full[:cut]}, {0: "stop"}), stop
        completion = openai_client.completions.create(model="tgi", prompt=chat_prompt(real_model_tokenizer, FRANCE),
                                                      max_tokens=32, temperature=0, stop=stop).choices[0]
        assert (completion.text, completion.finish_reason) == (full[:cut], "stop"), stop

    # TGI keeps the stop sequence: generation ends with the token that completes it (TGI's own behaviour).
    prompt = chat_prompt(real_model_tokenizer, FRANCE)
    for stop in (["Paris"], ["ital of"]):
        end = full.index(stop[0]) + len(stop[0])
        body = http.post("/generate", json={"inputs": prompt, "parameters": {
            "max_new_tokens": 32, "stop": stop, "details": True}}).json()
        text, tokens = body["generated_text"], body["details"]["tokens"]
        assert body["details"]["finish_reason"] == "stop_sequence", body
        assert text == full[:len(text)] == "".join(t["text"] for t in tokens), body
        assert len(text) - len(tokens[-1]["text"]) < end <= len(text), body  # the last token completes the stop
        events = _tgi_stream(http, prompt, {"max_new_tokens": 32, "stop": stop, "details": True})
        assert events[-1]["generated_text"] == text and events[-1]["details"]["finish_reason"] == "stop_sequence"


def test_logprobs_of_the_three_apis_are_transformers_log_softmax(openai_client, http: httpx.Client,
                                                                 real_model_dir: Path, real_model_tokenizer) -> None:
    """Greedy, 5 alternatives per position: chat `logprobs`/`top_logprobs`, completions `logprobs` and TGI
    `details`/`top_n_tokens` (with the prompt's logprobs, `decoder_input_details`) against one forward pass of
    transformers' model over the prompt and the generated tokens."""
    import torch
    from transformers import AutoModelForCausalLM

    prompt, steps, top = chat_prompt(real_model_tokenizer, FRANCE), 10, 5
    tgi = http.post("/generate", json={"inputs": prompt, "parameters": {
        "max_new_tokens": steps, "details": True, "top_n_tokens": top, "decoder_input_details": True}}).json()
    details = tgi["details"]
    generated = details["tokens"]
    assert details["finish_reason"] == "eos_token" and generated[-1]["special"], tgi  # the EOS is scored too
    chat = _chat(openai_client, FRANCE, max_tokens=steps, temperature=0, logprobs=True,
                 top_logprobs=top).choices[0].logprobs.content
    completion = openai_client.completions.create(model="tgi", prompt=prompt, max_tokens=steps, temperature=0,
                                                  logprobs=top).choices[0].logprobs

    prompt_ids = [t["id"] for t in details["prefill"]]
    ids = prompt_ids + [t["id"] for t in generated]
    model = AutoModelForCausalLM.from_pretrained(real_model_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        reference = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    del model

    # The prompt: no logprob for the first token, then each token's under the model given the ones before it.
    assert details["prefill"][0]["logprob"] is None
    for i, token in enumerate(details["prefill"][1:], start=1):
        assert token["logprob"] == pytest.approx(reference[i - 1, token["id"]].item(), abs=1e-3), (i, token)

    assert len(chat) == len(completion.tokens) == len(generated)
    for step, token in enumerate(generated):
        row = reference[len(prompt_ids) - 1 + step]
        want_ids = torch.topk(row, top).indices.tolist()
        want = row[token["id"]].item()
        where = (step, token["text"])
        assert token["id"] == want_ids[0], where  # greedy picked the most likely token
        assert token["logprob"] == pytest.approx(want, abs=1e-3), where
        alternatives = details["top_tokens"][step]
        assert [t["id"] for t in alternatives] == want_ids, where
        assert [t["logprob"] for t in alternatives] == pytest.approx(row[want_ids].tolist(), abs=1e-3), where
        texts = [t["text"] for t in alternatives]
        # The OpenAI routes report the same tokens (by text) with the same numbers.
        assert chat[step].token == completion.tokens[step] == token["text"], where
        assert chat[step].logprob == pytest.approx(want, abs=1e-3), where
        assert completion.token_logprobs[step] == pytest.approx(want, abs=1e-3), where
        assert [t.token for t in chat[step].top_logprobs] == texts, where
        assert [t.logprob for t in chat[step].top_logprobs] == pytest.approx(row[want_ids].tolist(), abs=1e-3), where
        assert completion.top_logprobs[step] == pytest.approx(dict(zip(texts, row[want_ids].tolist(), strict=True)),
                                                              abs=1e-3), where


def test_n_samples_with_a_seed_are_distinct_and_reproducible(openai_client) -> None:
    kwargs = {"max_tokens": 16, "temperature": 0.8, "n": 3, "seed": 7}
    first = [c.message.content for c in _chat(openai_client, HAIKU, **kwargs).choices]
    assert len(set(first)) == 3, first
    assert all(len(text.split()) >= 4 for text in first), first  # words, not noise or empty strings
    assert [c.message.content for c in _chat(openai_client, HAIKU, **kwargs).choices] == first
    texts, finishes = _streamed_chat(openai_client, HAIKU, **kwargs)
    assert [texts[i] for i in range(3)] == first and set(finishes) == {0, 1, 2}
    other_seed = [c.message.content for c in _chat(openai_client, HAIKU, **{**kwargs, "seed": 8}).choices]
    assert other_seed != first


def test_a_seed_repeats_a_sample_and_greedy_ignores_it(openai_client, http: httpx.Client,
                                                       real_model_tokenizer) -> None:
    """Sampling on the haiku (many good answers; the France answer is too certain to tell seeds apart), greedy on
    the France question."""

    def chat(messages: list[dict], seed: int | None, **kwargs) -> str:
        return _chat(openai_client, messages, max_tokens=16, seed=seed, **kwargs).choices[0].message.content

    sampled = chat(HAIKU, 11, temperature=1.0, top_p=0.95)
    assert chat(HAIKU, 11, temperature=1.0, top_p=0.95) == sampled
    assert chat(HAIKU, 12, temperature=1.0, top_p=0.95) != sampled
    greedy = chat(FRANCE, None, temperature=0)
    assert chat(FRANCE, 1, temperature=0) == chat(FRANCE, 2, temperature=0) == greedy

    # TGI: the same seed draws the same text and is echoed in the details; without do_sample the seed changes nothing.
    def generate(messages: list[dict], **parameters) -> dict:
        resp = http.post("/generate", json={"inputs": chat_prompt(real_model_tokenizer, messages), "parameters": {
            "max_new_tokens": 16, "details": True, **parameters}})
        assert resp.status_code == 200, resp.text
        return resp.json()

    drawn = generate(HAIKU, do_sample=True, seed=5)
    assert drawn["details"]["seed"] == 5
    assert generate(HAIKU, do_sample=True, seed=5)["generated_text"] == drawn["generated_text"]
    assert generate(HAIKU, do_sample=True, seed=6)["generated_text"] != drawn["generated_text"]
    assert generate(FRANCE, seed=1)["generated_text"] == generate(FRANCE, seed=2)["generated_text"] == greedy
