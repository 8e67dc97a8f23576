"""`vllm.entrypoints.llm.LLM` (0.26), the offline entry point the benchmark's offline phase uses: keyword arguments
become `EngineArgs` (an unknown one is a TypeError), `disable_log_stats` defaults to True, and `generate` returns one
final `RequestOutput` per prompt, in prompt order. The double runs its scripted engine on a private event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from vllm import _fake
from vllm.engine.arg_utils import EngineArgs
from vllm.outputs import RequestOutput
from vllm.sampling_params import RequestOutputKind, SamplingParams
from vllm.v1.engine.async_llm import AsyncLLM


class LLM:
    def __init__(self, model: str, *, tokenizer: str | None = None, skip_tokenizer_init: bool = False,
                 trust_remote_code: bool = False, tensor_parallel_size: int = 1, dtype: str = "auto",
                 quantization: str | None = None, revision: str | None = None, seed: int = 0,
                 gpu_memory_utilization: float = 0.92, enforce_eager: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("disable_log_stats", True)
        engine_args = EngineArgs(model=model, tokenizer=tokenizer, skip_tokenizer_init=skip_tokenizer_init,
                                 trust_remote_code=trust_remote_code, tensor_parallel_size=tensor_parallel_size,
                                 dtype=dtype, quantization=quantization, revision=revision, seed=seed,
                                 gpu_memory_utilization=gpu_memory_utilization, enforce_eager=enforce_eager, **kwargs)
        _fake.CONTROL.engine_args.append(engine_args)
        self._loop = asyncio.new_event_loop()
        vllm_config = engine_args.create_engine_config()
        self.llm_engine = AsyncLLM(vllm_config, executor_class=None, log_stats=not engine_args.disable_log_stats)
        self.model_config = vllm_config.model_config
        self._counter = 0

    def generate(self, prompts: Any, sampling_params: SamplingParams | Sequence[SamplingParams] | None = None, *,
                 use_tqdm: Any = True, lora_request: Any = None, priority: list[int] | None = None,
                 tokenization_kwargs: dict[str, Any] | None = None,
                 mm_processor_kwargs: dict[str, Any] | None = None) -> list[RequestOutput]:
        batch = [prompts] if isinstance(prompts, (str, dict)) else list(prompts)
        params = sampling_params if sampling_params is not None else SamplingParams()
        per_prompt = list(params) if isinstance(params, Sequence) else [params] * len(batch)
        if len(per_prompt) != len(batch):
            raise ValueError("The lengths of prompts and sampling_params must be the same.")

        async def one(prompt: Any, sp: SamplingParams) -> RequestOutput:
            sp = sp.clone()
            sp.output_kind = RequestOutputKind.FINAL_ONLY
            request_id, self._counter = str(self._counter), self._counter + 1
            last = None
            async for out in self.llm_engine.generate(prompt, sp, request_id, lora_request=lora_request):
                last = out
            assert last is not None
            return last

        async def run() -> list[RequestOutput]:
            return list(await asyncio.gather(*(one(p, sp) for p, sp in zip(batch, per_prompt, strict=True))))

        return self._loop.run_until_complete(run())

    def __del__(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is not None and not loop.is_closed():
            engine = getattr(self, "llm_engine", None)
            if engine is not None:
                engine.shutdown()
            loop.close()
