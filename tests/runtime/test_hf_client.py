"""huggingface_hub's InferenceClient against a live runtime: chat_completion and TGI text_generation, on the tiny
model and (the answer, streamed and not) on the real one."""

from __future__ import annotations

import pytest
from huggingface_hub import InferenceClient

from tests.fixtures.models import FRANCE_QUESTION, RuntimeServer, chat_prompt


@pytest.fixture
def client(base_url: str) -> InferenceClient:
    return InferenceClient(base_url=base_url, timeout=120)


def test_chat_completion(client: InferenceClient):
    out = client.chat_completion(messages=[{"role": "user", "content": "Say hi"}], max_tokens=8, temperature=0)
    assert out.choices[0].message.content
    assert out.choices[0].finish_reason in ("stop", "length")
    assert out.usage.completion_tokens <= 8


def test_chat_completion_stream(client: InferenceClient):
    full = client.chat_completion(messages=[{"role": "user", "content": "Say hi"}], max_tokens=8, temperature=0)
    chunks = list(client.chat_completion(messages=[{"role": "user", "content": "Say hi"}], max_tokens=8,
                                         temperature=0, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content


def test_text_generation_details(client: InferenceClient):
    out = client.text_generation("def main():", max_new_tokens=6, details=True, decoder_input_details=True,
                                 top_n_tokens=2)
    assert out.details.generated_tokens == len(out.details.tokens) == 6
    assert out.details.finish_reason == "length"
    assert out.generated_text == "".join(t.text for t in out.details.tokens)
    assert all(t.logprob <= 0 for t in out.details.tokens)
    assert out.details.prefill[0].logprob is None
    assert len(out.details.prefill) >= 3
    assert len(out.details.top_tokens) == 6 and all(len(t) == 2 for t in out.details.top_tokens)
    plain = client.text_generation("def main():", max_new_tokens=6)
    assert plain == out.generated_text
    full = client.text_generation("def main():", max_new_tokens=6, return_full_text=True)
    assert full == "def main():" + plain


def test_text_generation_stream(client: InferenceClient):
    reference = client.text_generation("def main():", max_new_tokens=6)
    events = list(client.text_generation("def main():", max_new_tokens=6, stream=True, details=True))
    assert len(events) == 6
    assert all(e.details is None for e in events[:-1])
    last = events[-1]
    assert last.generated_text == reference
    assert last.details.finish_reason == "length"
    assert last.details.generated_tokens == 6
    assert "".join(e.token.text for e in events) == reference
    tokens = list(client.text_generation("def main():", max_new_tokens=6, stream=True))
    assert "".join(tokens) == reference


def test_text_generation_sampling_seed(client: InferenceClient):
    a = client.text_generation("x =", max_new_tokens=10, do_sample=True, seed=5, details=True)
    b = client.text_generation("x =", max_new_tokens=10, do_sample=True, seed=5, details=True)
    assert a.generated_text == b.generated_text
    assert a.details.seed == 5
    c = client.text_generation("x =", max_new_tokens=10, do_sample=True, details=True)
    assert isinstance(c.details.seed, int)


@pytest.mark.realmodel
class TestOnTheRealModel:
    """The same client against the session's SmolLM2-135M-Instruct server."""

    @pytest.fixture
    def base_url(self, real_model_server: RuntimeServer) -> str:
        return real_model_server.base_url

    def test_chat_completion_answers_the_question(self, client: InferenceClient):
        messages = [{"role": "user", "content": FRANCE_QUESTION}]
        out = client.chat_completion(messages=messages, max_tokens=32, temperature=0)
        answer = out.choices[0].message.content
        assert "Paris" in answer and out.choices[0].finish_reason == "stop", out
        chunks = client.chat_completion(messages=messages, max_tokens=32, temperature=0, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer

    def test_text_generation_answers_the_question(self, client: InferenceClient, real_model_tokenizer):
        prompt = chat_prompt(real_model_tokenizer, [{"role": "user", "content": FRANCE_QUESTION}])
        out = client.text_generation(prompt, max_new_tokens=32, details=True)
        assert "Paris" in out.generated_text and out.details.finish_reason == "eos_token", out
        assert "".join(client.text_generation(prompt, max_new_tokens=32, stream=True)) == out.generated_text
