"""LangChain's ChatOpenAI and LlamaIndex's OpenAILike, pointed at the gateway's HTTP API (echo executor, loopback)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_openai import ChatOpenAI
from llama_index.core.base.llms.types import ChatMessage
from llama_index.llms.openai_like import OpenAILike

from trt_gateway.executors.echo import EchoExecutor
from trt_gateway.testing import LiveGateway


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with (gateway := LiveGateway(EchoExecutor({"script": "Hello world"}), server={"http": True, "http_port": 0})):
        yield f"http://127.0.0.1:{gateway.server.http_port}/v1"


def test_langchain_chat_openai(base_url: str) -> None:
    llm = ChatOpenAI(base_url=base_url, api_key="none", model="echo", max_tokens=32, max_retries=0)
    reply = llm.invoke("hi")
    assert reply.content == "Hello world"
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] == 12
    assert "".join(str(chunk.content) for chunk in llm.stream("hi")) == "Hello world"


async def test_langchain_chat_openai_async_with_stop(base_url: str) -> None:
    llm = ChatOpenAI(base_url=base_url, api_key="none", model="echo", max_tokens=32, max_retries=0)
    reply = await llm.ainvoke("hi", stop=[" "])
    assert reply.content == "Hello" and reply.response_metadata["finish_reason"] == "stop"


def test_llama_index_openai_like(base_url: str) -> None:
    llm = OpenAILike(api_base=base_url, api_key="none", model="echo", is_chat_model=True, max_tokens=32,
                     context_window=4096, max_retries=0)
    assert llm.chat([ChatMessage(role="user", content="hi")]).message.content == "Hello world"
    assert "".join(r.delta or "" for r in llm.stream_complete("hi")) == "Hello world"
    completer = OpenAILike(api_base=base_url, api_key="none", model="echo", is_chat_model=False, max_tokens=5,
                           max_retries=0)
    assert completer.complete("x").text == "Hello"
