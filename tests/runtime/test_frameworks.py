"""LangChain's ChatOpenAI and LlamaIndex's OpenAILike pointed at the runtime: the request fields they send by
default must all be accepted (unknown fields are a 400 here, so this guards the supported-field list)."""

from __future__ import annotations


def test_langchain_chat_openai(base_url):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=f"{base_url}/v1", api_key="unused", model="tgi", max_tokens=6, temperature=0,
                     max_retries=0)
    reply = llm.invoke("Say hi")
    assert isinstance(reply.content, str) and reply.content
    chunks = list(llm.stream("Say hi"))
    assert "".join(c.content for c in chunks) == reply.content


def test_llama_index_openai_like(base_url):
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai_like import OpenAILike

    llm = OpenAILike(api_base=f"{base_url}/v1", api_key="unused", model="tgi", is_chat_model=True, max_tokens=6,
                     temperature=0, max_retries=0)
    reply = llm.chat([ChatMessage(role="user", content="Say hi")])
    assert reply.message.content
    completion = OpenAILike(api_base=f"{base_url}/v1", api_key="unused", model="tgi", max_tokens=6, temperature=0,
                            max_retries=0).complete("def main():")
    assert completion.text
