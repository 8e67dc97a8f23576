"""Helpers for the trtllm tests: a model directory the double accepts, configs, requests, adapters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from doubles import write_adapter, write_model  # noqa: F401  (the tests here import them from this module)

from trt_gateway.config import ExecutorConfig, from_mapping
from trt_gateway.executors.trtllm import TrtllmExecutor
from trt_gateway.types import GenerateRequest, Prompt, TokenDelta

FAST = {"stats_interval_s": 0.01, "stats_timeout_s": 0.01}


def executor_section(model: str, **kwargs: Any) -> dict[str, Any]:
    options = {**FAST, **kwargs.pop("options", {})}
    return {"name": "trtllm", "model": model, "options": options, **kwargs}


def executor_config(model: str, **kwargs: Any) -> ExecutorConfig:
    return from_mapping({"executor": executor_section(model, **kwargs)}).executor


async def started(model: str, **kwargs: Any) -> TrtllmExecutor:
    executor = TrtllmExecutor.from_config(executor_config(model, **kwargs))
    await executor.start()
    return executor


def req(text: str | None = "hello", request_id: str = "r1", **kwargs: Any) -> GenerateRequest:
    prompt = kwargs.pop("prompt", None) or Prompt(text=text)
    return GenerateRequest(request_id=request_id, model=kwargs.pop("model", "tiny-llama"), prompt=prompt, **kwargs)


async def collect(executor: TrtllmExecutor, request: GenerateRequest) -> list[TokenDelta]:
    return [d async for d in executor.generate(request)]


def text_of(deltas: Sequence[TokenDelta]) -> str:
    return "".join(d.text for d in deltas)


def ids_of(deltas: Sequence[TokenDelta]) -> list[int]:
    return [t for d in deltas for t in d.token_ids]
