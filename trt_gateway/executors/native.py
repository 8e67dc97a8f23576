"""The `native` executor (the default): the embedded PyTorch engine behind the Executor contract.

Tokenization and chat templates happen here, on the event loop (the Rust tokenizer is fast and releases no work
worth a thread); everything per step happens in the engine thread (`engine/async_engine.py`).

Options (`--option KEY=VALUE` or `[executor.options]`) are `EngineConfig` fields: device, dtype, max_model_len,
max_num_seqs, max_num_batched_tokens, block_size, kv_cache_bytes, gpu_memory_utilization, num_kv_blocks,
enable_prefix_caching, max_top_logprobs, seed, ngram_min, ngram_max, cpu_threads. LoRA sizes come from `[executor.lora]`, and
speculative decoding from `[executor.speculative]` (mode, draft_model, num_draft_tokens, max_batch) instead.

LoRA is on when adapter roots are configured (adapters can only be loaded from under one): the engine then has
`max_loras` slots of rank `max_lora_rank`. Adapter files are read in a worker thread, never on the event loop nor in
the engine thread: `generate` pins the request's adapter (reading it from disk if it was evicted) before handing the
request to the engine, and releases that pin when the stream ends.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from trt_gateway import __version__, errors
from trt_gateway.config import ConfigError, ExecutorConfig, LoraConfig, SpeculativeConfig
from trt_gateway.executors.base import Executor, Health
from trt_gateway.types import AdapterInfo, Capabilities, ChatMessage, GenerateRequest, ModelInfo, TokenDelta

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
        from trt_gateway.engine.config import EngineConfig, EngineConfigError

        self.model_path = Path(model)
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
        self._async_engine: Any = None
        self._tokenizer: Any = None
        self._template: Any = None
        self._info: ModelInfo | None = None

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
        from tokenizers import Tokenizer

        from trt_gateway.engine import structured_output
        from trt_gateway.engine.async_engine import AsyncEngine
        from trt_gateway.engine.chat_template import ChatTemplate
        from trt_gateway.engine.config import EngineConfigError
        from trt_gateway.engine.llm_engine import LLMEngine

        tokenizer_file = self.model_path / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise ConfigError(f"executor.model: {self.model_path} has no tokenizer.json (HF fast tokenizer required)")
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._template = ChatTemplate.from_pretrained(self.model_path)
        self._async_engine = AsyncEngine(lambda: LLMEngine(self.engine_config), self._tokenizer)
        try:
            engine = await self._async_engine.start()
        except EngineConfigError as exc:  # the checkpoint or the options cannot work: say which, at start-up
            raise ConfigError(f"executor: cannot serve {self.model_path}: {exc}") from exc
        self._info = ModelInfo(
            name=self.served_name,
            executor=self.name,
            executor_version=__version__,
            max_context_length=engine.max_model_len,
            vocab_size=engine.vocab_size,
            eos_token_ids=tuple(engine.eos_token_ids),
            capabilities=Capabilities(
                logprobs=True,
                max_top_logprobs=self.engine_config.max_top_logprobs,
                chat_template=self._template.available,
                lora=engine.lora is not None,
                max_lora_rank=self.engine_config.max_lora_rank if engine.lora is not None else 0,
                max_loras=self.engine_config.max_loras,
                guided=structured_output.KINDS if structured_output.available() else (),
                speculative=self.engine_config.speculative_mode,
                num_draft_tokens=self.engine_config.num_draft_tokens if self.engine_config.speculative_mode else 0,
            ),
        )
        self._health = Health.SERVING

    def register_metrics(self, registry: Any) -> None:
        if not self.engine_config.speculative_mode:
            return
        from trt_gateway.executors.native_metrics import SpeculationCollector

        def stats() -> Any:
            engine = self._async_engine.engine if self._async_engine is not None else None
            return engine.speculation.stats.snapshot() if engine is not None and engine.speculation else None

        registry.register(SpeculationCollector(self.served_name, self.engine_config.speculative_mode, stats))

    def models(self) -> Sequence[ModelInfo]:
        if self._info is None:
            raise errors.Unavailable("the native executor has not started")
        return (self._info,)

    def health(self) -> Health:
        if self._async_engine is not None and self._async_engine.dead:
            return Health.DEAD
        return self._health

    def _encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)

    def _render(self, messages: Sequence[ChatMessage]) -> list[int]:
        # The template writes the BOS token itself when the model wants one, so no special tokens are added on top.
        return self._encode(self._template.render([{"role": m.role, "content": m.content} for m in messages]), False)

    async def tokenize(
        self,
        model: str,
        *,
        text: str | None = None,
        messages: Sequence[ChatMessage] | None = None,
        add_special_tokens: bool = True,
    ) -> list[int]:
        self._check_model(model)
        return self._render(messages) if messages else self._encode(text or "", add_special_tokens)

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenDelta]:
        self._check_model(request.model)
        prompt = request.prompt
        if prompt.token_ids is not None:
            ids = list(prompt.token_ids)
        elif prompt.messages is not None:
            ids = self._render(prompt.messages)
        else:
            ids = self._encode(prompt.text or "", True)
        # Compile the grammar in a thread (a new JSON schema can take a while; a known one is a cache hit).
        grammar = None
        if request.guided.kind is not None:
            grammar = await asyncio.to_thread(self._async_engine.engine.structured.compile, request.guided)
        # Pin the adapter first, in a thread: an evicted adapter is read from disk here, not in the engine thread.
        ref = await self._pin_adapter(request.adapter) if request.adapter else None
        try:
            async for delta in self._async_engine.generate(request, ids, grammar):
                yield delta
        finally:
            if ref is not None:
                ref.release()

    # -- adapters -------------------------------------------------------------------------------------------------
    def _lora(self) -> Any:
        registry = self._async_engine.engine.lora if self._async_engine is not None else None
        if registry is None:
            raise errors.FailedPrecondition(
                "LoRA is off: the server was started without adapter roots (--adapter-root)", field="adapter"
            )
        return registry

    async def _pin_adapter(self, name: str) -> Any:
        """The adapter's LoraRef. If the caller is cancelled mid-read, the ref is released when the read ends."""
        acquiring = asyncio.ensure_future(asyncio.to_thread(self._lora().acquire, name))
        try:
            return await asyncio.shield(acquiring)
        except asyncio.CancelledError:
            acquiring.add_done_callback(_release_result)
            raise

    def _with_model(self, info: AdapterInfo) -> AdapterInfo:
        return dataclasses.replace(info, model=self.served_name)

    async def load_adapter(self, model: str, name: str, path: str) -> AdapterInfo:
        self._check_model(model)
        return self._with_model(await asyncio.to_thread(self._lora().register, name, path))

    async def unload_adapter(self, model: str, name: str) -> None:
        self._check_model(model)
        self._lora().unregister(name)

    def list_adapters(self, model: str) -> Sequence[AdapterInfo]:
        self._check_model(model)
        return [self._with_model(a) for a in self._lora().list()]

    async def abort(self, request_id: str) -> bool:
        return bool(self._async_engine is not None and await self._async_engine.abort(request_id))

    async def shutdown(self) -> None:
        if self._async_engine is not None:
            await self._async_engine.shutdown()
        self._health = Health.STARTING


def _release_result(done: asyncio.Future[Any]) -> None:
    if not done.cancelled() and done.exception() is None:
        done.result().release()
