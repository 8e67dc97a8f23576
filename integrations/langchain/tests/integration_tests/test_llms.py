"""TrtGatewayLLM against live gateways (langchain-tests has no standard suite for completion LLMs)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.outputs import GenerationChunk
from trt_gateway import errors
from trt_gateway.testing import API_KEY, REPLY

from langchain_trt_gateway import TrtGatewayLLM

PROMPT = "The for statement"


def demo(**kwargs: Any) -> TrtGatewayLLM:
    return TrtGatewayLLM(**{"model": "demo", "temperature": 0, "max_tokens": 16, **kwargs})


def scripted_llm(target: str, **kwargs: Any) -> TrtGatewayLLM:
    return TrtGatewayLLM(target=target, model="scripted", api_key=API_KEY, **kwargs)


class Tokens(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


class AsyncTokens(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    async def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


def test_invoke_returns_only_the_completion() -> None:
    text = demo().invoke(PROMPT)
    assert text and not text.startswith(PROMPT)


def test_generate_reports_finish_and_usage() -> None:
    result = demo().generate([PROMPT])
    (gen,) = result.generations[0]
    info = gen.generation_info or {}
    assert info["finish_reason"] == "length" and info["model_name"] == "demo"
    assert info["usage"]["completion_tokens"] == 16 and info["usage"]["prompt_tokens"] > 0
    assert result.llm_output is not None
    assert result.llm_output["token_usage"]["completion_tokens"] == 16
    assert result.llm_output["model_name"] == "demo"


def test_stream_yields_deltas_and_fires_callbacks() -> None:
    llm = demo()
    handler = Tokens()
    pieces = list(llm.stream(PROMPT, config={"callbacks": [handler]}))
    assert len([p for p in pieces if p]) > 1
    assert "".join(pieces) == llm.invoke(PROMPT)
    assert handler.tokens == pieces


def test_final_chunk_alone_carries_metadata() -> None:
    chunks = list(demo()._stream(PROMPT))
    assert all(isinstance(c, GenerationChunk) for c in chunks)
    *body, last = chunks
    assert all(c.generation_info is None for c in body)
    assert last.generation_info is not None
    assert last.generation_info["finish_reason"] == "length"
    assert last.generation_info["usage"]["completion_tokens"] == 16


async def test_astream_and_ainvoke_are_async(monkeypatch: pytest.MonkeyPatch) -> None:
    llm = demo()
    monkeypatch.setattr(TrtGatewayLLM, "client", property(lambda self: pytest.fail("blocking client used")))
    handler = AsyncTokens()
    pieces = [p async for p in llm.astream(PROMPT, config={"callbacks": [handler]})]
    assert len([p for p in pieces if p]) > 1
    assert handler.tokens == pieces
    assert "".join(pieces) == await llm.ainvoke(PROMPT)


def test_stop_per_call() -> None:
    llm = demo(max_tokens=24)
    full = llm.invoke(PROMPT)
    words = full.split()
    assert len(words) > 2
    stop = words[len(words) // 2]
    assert llm.invoke(PROMPT, stop=[stop]) == full[: full.index(stop)]
    assert "".join(llm.stream(PROMPT, stop=[stop])) == full[: full.index(stop)]
    assert demo(max_tokens=24, stop=[stop]).invoke(PROMPT, stop=[]) == full


def test_batch_is_concurrent(scripted: tuple[str, Any]) -> None:
    target, executor = scripted
    executor.word_delay_s = 0.05
    assert scripted_llm(target).batch(["a", "b", "c", "d"]) == [REPLY] * 4
    assert executor.peak_in_flight == 4
    result = scripted_llm(target).generate(["a", "b", "c"])
    assert [g[0].text for g in result.generations] == [REPLY] * 3
    assert result.llm_output is not None and result.llm_output["token_usage"]["prompt_tokens"] == 21


async def test_abatch_is_concurrent(scripted: tuple[str, Any]) -> None:
    target, executor = scripted
    executor.word_delay_s = 0.05
    assert await scripted_llm(target).abatch(["a", "b", "c", "d"]) == [REPLY] * 4
    assert executor.peak_in_flight == 4


def test_adapter_model_and_speculative_stats(scripted: tuple[str, Any]) -> None:
    target, executor = scripted
    result = scripted_llm(target, adapter="a1").bind(adapter="sql-lora").invoke("Hi")
    assert result == REPLY
    assert executor.requests[-1].adapter == "sql-lora" and executor.requests[-1].model == "scripted"
    (gen,) = scripted_llm(target, adapter="a1").generate(["Hi"]).generations[0]
    info = gen.generation_info or {}
    assert info["adapter"] == "a1"
    assert info["speculative"] == {"draft_tokens": 8, "accepted_tokens": 6, "acceptance_rate": 0.75}


def test_unknown_keyword_is_refused() -> None:
    with pytest.raises(TypeError, match="adaptor"):
        demo().invoke(PROMPT, adaptor="x")


async def test_timeout(scripted: tuple[str, Any]) -> None:
    target, executor = scripted
    executor.word_delay_s = 0.5
    with pytest.raises(errors.DeadlineExceeded):
        await scripted_llm(target, timeout=0.2).ainvoke("Hi")
    await asyncio.sleep(0)
