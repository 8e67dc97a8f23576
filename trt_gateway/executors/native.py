"""The `native` executor (the default): the embedded PyTorch engine behind the Executor contract.

This module only maps the gateway's configuration onto `EngineConfig` and the engine's facts onto `ServedModel`;
everything else goes through the engine's typed async front (`engine/async_engine.AsyncEngine`: generate, abort,
tokenize, adapters, stats), which owns tokenization, checks, grammars, adapter pins and the engine thread.

Options (`--option KEY=VALUE` or `[executor.options]`) are `EngineConfig` fields: device, dtype, max_model_len,
max_num_seqs, max_num_batched_tokens, block_size, kv_cache_bytes, gpu_memory_utilization, num_kv_blocks,
enable_prefix_caching, max_top_logprobs, seed, ngram_min, ngram_max, cpu_threads, quantization ("fp8", also
`--quantization fp8`), kv_cache_dtype ("fp8", also `--kv-cache-dtype fp8`). LoRA sizes come from `[executor.lora]`, and
speculative decoding from `[executor.speculative]` (mode, draft_model, num_draft_tokens, max_batch) instead.

LoRA is on when adapter roots are configured (adapters can only be loaded from under one): the engine then has
`max_loras` slots of rank `max_lora_rank`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trt_gateway import __version__, errors, model_path
from trt_gateway.config import ConfigError, ExecutorConfig, LoraConfig, SpeculativeConfig
from trt_gateway.executors.base import Executor, Health
from trt_gateway.types import (
    AdapterInfo,
    Capabilities,
    ChatMessage,
    ExecutorLoad,
    GenerateRequest,
    ServedModel,
    TokenDelta,
)

if TYPE_CHECKING:  # the engine imports torch: only when the executor starts
    from trt_gateway.engine.async_engine import AsyncEngine

DEMO_MODEL = Path(__file__).resolve().parent.parent / "assets" / "demo" / "target"
DEMO_NAME = "demo"
_LORA_OPTIONS = ("max_loras", "max_cpu_loras", "max_lora_rank")  # set through LoraConfig, not options
# set through SpeculativeConfig ([executor.speculative], --speculative ...), not options
_SPEC_OPTIONS = ("speculative_mode", "draft_model", "num_draft_tokens", "speculative_max_batch")


class NativeExecutor(Executor):
    name = "native"

    def __init__(
        self,
        model: str | Path,
        *,
        served_name: str = "",
        options: Mapping[str, Any] | None = None,
        lora: LoraConfig | None = None,
        speculative: SpeculativeConfig | None = None,
    ) -> None:
        # Imported here so that `import trt_gateway.executors.native` (the registry, --help) does not load torch.
        from trt_gateway.engine.engine_config import EngineConfig, EngineConfigError

        self.model_path = model_path.check(str(model))  # a hub id, a typo or a stray file: refused here, in one line
        known = {f.name for f in dataclasses.fields(EngineConfig)} - {"model", *_LORA_OPTIONS, *_SPEC_OPTIONS}
        unknown = sorted(set(options or {}) - known)
        if unknown:
            raise ConfigError(f"executor.options: unknown native option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        lora = lora or LoraConfig()
        spec = speculative or SpeculativeConfig()
        try:
            self.engine_config = EngineConfig(
                model=str(self.model_path),
                **dict(options or {}),
                max_loras=lora.max_loras if lora.adapter_roots else 0,
                max_cpu_loras=lora.max_cpu_loras,
                max_lora_rank=lora.max_lora_rank,
                speculative_mode=spec.mode,
                draft_model=spec.draft_model or None,
                num_draft_tokens=spec.num_draft_tokens,
                speculative_max_batch=spec.max_batch,
            )
        except (EngineConfigError, TypeError) as exc:
            raise ConfigError(f"executor.options: {exc}") from exc
        self.served_name = served_name or (DEMO_NAME if self.model_path == DEMO_MODEL else self.model_path.name)
        self._health = Health.STARTING
        self.front: AsyncEngine | None = None
        self._info: ServedModel | None = None

    @classmethod
    def from_config(cls, config: ExecutorConfig) -> NativeExecutor:
        return cls(
            config.model or DEMO_MODEL,
            served_name=config.served_name,
            options=config.options,
            lora=config.lora,
            speculative=config.speculative,
        )

    async def start(self) -> None:
        from trt_gateway.engine.async_engine import AsyncEngine
        from trt_gateway.engine.engine_config import EngineConfigError

        try:
            self.front = front = await AsyncEngine.start(self.engine_config)
        except EngineConfigError as exc:  # the checkpoint or the options cannot work: say which, at start-up
            raise ConfigError(f"executor: cannot serve {self.model_path}: {exc}") from exc
        facts = front.facts
        assert facts is not None  # set by start()
        self._info = ServedModel(
            name=self.served_name,
            executor=self.name,
            executor_version=__version__,
            max_context_length=facts.max_model_len,
            vocab_size=facts.vocab_size,
            eos_token_ids=facts.eos_token_ids,
            capabilities=Capabilities(
                logprobs=True,
                max_top_logprobs=facts.max_top_logprobs,
                chat_template=facts.chat_template,
                lora=facts.lora,
                max_lora_rank=facts.max_lora_rank,
                max_loras=facts.max_loras,
                guided=facts.guided,
                speculative=facts.speculative,
                num_draft_tokens=facts.num_draft_tokens,
            ),
        )
        self._health = Health.SERVING

    def register_metrics(self, registry: Any) -> None:
        if not self.engine_config.speculative_mode:
            return
        from trt_gateway.executors.native_metrics import SpeculationCollector

        def speculation() -> Any:
            stats = self.front.stats() if self.front is not None else None
            return stats.speculation if stats is not None else None

        registry.register(SpeculationCollector(self.served_name, self.engine_config.speculative_mode, speculation))

    def current_load(self) -> ExecutorLoad | None:
        stats = self.front.stats() if self.front is not None else None
        return stats.load if stats is not None else None

    def health(self) -> Health:
        if self.front is not None and self.front.dead:
            return Health.DEAD
        return self._health

    def _front(self, model: str) -> AsyncEngine:
        self._check_model(model)
        if self.front is None:
            raise errors.Unavailable("the native executor has not started")
        return self.front

    async def tokenize(
        self,
        model: str,
        *,
        text: str | None = None,
        messages: Sequence[ChatMessage] | None = None,
        add_special_tokens: bool = True,
    ) -> list[int]:
        return await self._front(model).tokenize(text=text, messages=messages, add_special_tokens=add_special_tokens)

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenDelta]:
        # aclosing: closing this stream must close the front's at once (which aborts the request), not whenever the
        # garbage collector finalises it.
        async with contextlib.aclosing(self._front(request.model).generate(request)) as deltas:
            async for delta in deltas:
                yield delta

    async def abort(self, request_id: str) -> bool:
        return self.front is not None and await self.front.abort(request_id)

    # -- adapters: the engine's, reported under the served model's name ------------------------------------------
    def _with_model(self, info: AdapterInfo) -> AdapterInfo:
        return dataclasses.replace(info, model=self.served_name)

    async def load_adapter(self, model: str, name: str, path: str) -> AdapterInfo:
        return self._with_model(await self._front(model).load_adapter(name, path))

    async def unload_adapter(self, model: str, name: str) -> None:
        await self._front(model).unload_adapter(name)

    def list_adapters(self, model: str) -> Sequence[AdapterInfo]:
        return [self._with_model(a) for a in self._front(model).list_adapters()]

    async def shutdown(self) -> None:
        if self.front is not None:
            await self.front.shutdown()
        self._health = Health.STARTING
