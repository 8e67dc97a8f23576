"""`TrtGatewayLLM`: a LangChain text-completion LLM over the trt-gateway client (raw prompts, no chat template)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseLLM
from langchain_core.language_models.base import LangSmithParams
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from pydantic import model_validator
from trt_gateway.client import Completion, Usage

from langchain_trt_gateway._common import GatewayFields, Piece, ResolvedCall, finish_metadata, token_usage
from langchain_trt_gateway._version import __version__

MAX_CONCURRENCY = 16  # threads a sync batch uses at most; the server's admission queue does the real limiting


class TrtGatewayLLM(GatewayFields, BaseLLM):
    """A completion LLM served by a trt-gateway: the prompt goes to the model as is (no chat template).

        from langchain_trt_gateway import TrtGatewayLLM

        llm = TrtGatewayLLM(target="localhost:50051", max_tokens=32, stop=["\\n\\n"])
        llm.invoke("def fibonacci(n):")
        llm.batch(["import os", "import sys"])   # sent concurrently

    Per-call keyword arguments (or `.bind(...)`) are request fields and override the constructor's, e.g.
    `llm.bind(adapter="sql-lora")`. Each generation's `generation_info` holds the finish metadata and usage.
    """

    @model_validator(mode="after")
    def _set_trt_gateway_version(self) -> TrtGatewayLLM:
        self._add_version("langchain-trt-gateway", __version__)
        return self

    @property
    def _llm_type(self) -> str:
        return "trt-gateway"

    @property
    def _identifying_params(self) -> Mapping[str, Any]:
        return self._identifying()

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self._ls_params(stop, kwargs, "llm")

    # -- generation: every prompt of a batch is its own request, all in flight at once ------------------------------

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        call = self._resolve(stop, kwargs)
        name = self._model_name(call)

        def one(prompt: str) -> Completion:
            return self.client.generate(prompt, timeout=call.timeout, **call.params)

        if len(prompts) == 1:
            done = [one(prompts[0])]
        else:
            with ThreadPoolExecutor(max_workers=min(len(prompts), MAX_CONCURRENCY)) as pool:
                done = list(pool.map(one, prompts))
        return _llm_result(done, name, call)

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        call = self._resolve(stop, kwargs)
        name = await self._amodel_name(call)
        client = self.async_client
        done = await asyncio.gather(*(client.generate(p, timeout=call.timeout, **call.params) for p in prompts))
        return _llm_result(list(done), name, call)

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        # BaseLLM.stream does not report tokens itself (unlike chat models): the callback is ours to fire.
        for piece in self._stream_pieces(self._resolve(stop, kwargs), text=prompt):
            chunk = _generation_chunk(piece)
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        async for piece in self._astream_pieces(self._resolve(stop, kwargs), text=prompt):
            chunk = _generation_chunk(piece)
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


def _usage_info(usage: Usage) -> dict[str, int]:
    return {**token_usage(usage), "cached_tokens": usage.cached_tokens}


def _generation_chunk(piece: Piece) -> GenerationChunk:
    if piece.metadata is None:
        return GenerationChunk(text=piece.text)
    info = dict(piece.metadata)
    if piece.usage is not None:
        info["usage"] = _usage_info(piece.usage)
    return GenerationChunk(text=piece.text, generation_info=info)


def _llm_result(done: list[Completion], name: str, call: ResolvedCall) -> LLMResult:
    generations = []
    total = Usage()
    for c in done:
        info = finish_metadata(
            model_name=name,
            adapter=call.adapter,
            finish_reason=c.finish_reason,
            matched_stop=c.matched_stop,
            usage=c.usage,
            timings=c.timings,
            request_id=c.request_id,
        )
        info["usage"] = _usage_info(c.usage)
        generations.append([Generation(text=c.text, generation_info=info)])
        total = Usage(
            total.prompt_tokens + c.usage.prompt_tokens,
            total.completion_tokens + c.usage.completion_tokens,
            total.cached_tokens + c.usage.cached_tokens,
            total.draft_tokens + c.usage.draft_tokens,
            total.accepted_tokens + c.usage.accepted_tokens,
        )
    return LLMResult(generations=generations, llm_output={"token_usage": token_usage(total), "model_name": name})
