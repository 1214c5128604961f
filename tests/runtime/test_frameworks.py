"""LangChain's ChatOpenAI and LlamaIndex's OpenAILike pointed at the runtime: the request fields they send by
default must all be accepted (unknown fields are a 400 here, so this guards the supported-field list), and on the
real model (SmolLM2-135M-Instruct) they get the real answer back."""

from __future__ import annotations

import pytest

from tests.fixtures.models import FRANCE_QUESTION, RuntimeServer


def chat_openai(base_url: str, **kwargs):
    """LangChain's OpenAI chat model on the runtime, greedy."""
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url=f"{base_url}/v1", api_key="unused", model="tgi", temperature=0, max_retries=0, **kwargs)


def openai_like(base_url: str, **kwargs):
    """LlamaIndex's OpenAI-compatible LLM on the runtime, greedy (``is_chat_model=True`` for the chat route)."""
    from llama_index.llms.openai_like import OpenAILike

    return OpenAILike(api_base=f"{base_url}/v1", api_key="unused", model="tgi", temperature=0, max_retries=0,
                      **kwargs)


def test_langchain_chat_openai(base_url):
    llm = chat_openai(base_url, max_tokens=6)
    reply = llm.invoke("Say hi")
    assert isinstance(reply.content, str) and reply.content
    chunks = list(llm.stream("Say hi"))
    assert "".join(c.content for c in chunks) == reply.content


def test_llama_index_openai_like(base_url):
    from llama_index.core.llms import ChatMessage

    reply = openai_like(base_url, is_chat_model=True, max_tokens=6).chat([ChatMessage(role="user", content="Say hi")])
    assert reply.message.content
    completion = openai_like(base_url, max_tokens=6).complete("def main():")
    assert completion.text


@pytest.mark.realmodel
class TestOnTheRealModel:
    """The same clients against the session's SmolLM2-135M-Instruct server."""

    @pytest.fixture
    def base_url(self, real_model_server: RuntimeServer) -> str:
        return real_model_server.base_url

    def test_langchain_chat_openai_answers_the_question(self, base_url):
        llm = chat_openai(base_url, max_tokens=32)
        reply = llm.invoke(FRANCE_QUESTION)
        assert "Paris" in reply.content, reply
        assert "".join(c.content for c in llm.stream(FRANCE_QUESTION)) == reply.content

    def test_llama_index_openai_like_answers_the_question(self, base_url):
        from llama_index.core.llms import ChatMessage

        llm = openai_like(base_url, is_chat_model=True, max_tokens=32)
        messages = [ChatMessage(role="user", content=FRANCE_QUESTION)]
        reply = llm.chat(messages)
        assert "Paris" in reply.message.content, reply
        assert "".join(r.delta for r in llm.stream_chat(messages)) == reply.message.content
        # The completions route: no chat template, the model carries on the sentence.
        completion = openai_like(base_url, max_tokens=8).complete("The capital of France is")
        assert "Paris" in completion.text, completion
