"""The `trtllm` executor: TensorRT-LLM's `LLM` API (1.x) behind the Executor contract.

Written against shared/reference/trtllm_api.md and tested against a double of that API (tests/trtllm/fake); it has
NOT yet run against a real TensorRT-LLM installation (docs/trtllm.md says what is and is not verified).

One request, as numbered steps:
1. map the request to a fresh `SamplingParams` (params; unmappable fields -> UNIMPLEMENTED naming the field);
2. call `llm.generate_async(..., streaming=True)` on the event loop thread (its result needs the running loop) and
   remember `request_id -> RequestOutput` (TensorRT-LLM's ids are its own ints);
3. stream the responses as deltas (stream: diffs copied at once, multi-token steps, stop-string holdback);
4. on Abort, client cancel, deadline or disconnect (generator closed), call `RequestOutput.abort()`: merely stopping
   the iteration would leave the request running on the GPU.

Modules of this package: options (the options schema), api (finding TensorRT-LLM, LLM kwargs), params (request
mapping), stream (outputs -> deltas), stats (metrics). Shared with the vllm executor (executors/): external_engine
(the request table, adapter pinning, health), hf_checkpoint (config.json, EOS ids, chat rendering), adapter_registry
(Load/Unload/List), sampling_map and request_output (the SamplingParams and outputs both engines shape alike),
option_table, engine_probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from trt_gateway import adapter_paths, errors
from trt_gateway.config import ConfigError, ExecutorConfig
from trt_gateway.executors import hf_checkpoint
from trt_gateway.executors.adapter_registry import Adapter, AdapterRegistry, read_adapter_config
from trt_gateway.executors.base import Health
from trt_gateway.executors.external_engine import ExternalEngineExecutor
from trt_gateway.executors.hf_checkpoint import CheckpointFiles
from trt_gateway.executors.sampling_map import GUIDED_KINDS
from trt_gateway.executors.trtllm.api import TrtApi, llm_kwargs, load_api
from trt_gateway.executors.trtllm.options import TrtllmOptions, check_model_path, trtllm_modules
from trt_gateway.executors.trtllm.params import ParamSupport, sampling_kwargs
from trt_gateway.executors.trtllm.stats import StatsPoller, load_from_stats
from trt_gateway.executors.trtllm.stream import abort_result, deltas
from trt_gateway.types import AdapterInfo, ChatMessage, GenerateRequest, ServedModel, TokenDelta

log = logging.getLogger(__name__)


class TrtllmExecutor(ExternalEngineExecutor[AdapterRegistry]):
    name = "trtllm"
    dead_message = "the TensorRT-LLM executor is gone"

    def __init__(self, config: ExecutorConfig) -> None:
        # Everything checkable without a GPU is checked here, so a bad config fails before any model loads.
        super().__init__(config)
        self.options = TrtllmOptions.parse(config.options)
        check_model_path(config.model, "executor.model")
        self.spec = self.options.speculative_spec(config.speculative)
        self.api: TrtApi = load_api(self.options.backend)
        lora_modules = self._lora_modules() if config.lora.adapter_roots else None
        self.llm_kwargs = llm_kwargs(self.api, self.options, config, self.spec, lora_modules)
        self.adapters = (
            AdapterRegistry(
                self.served_name, config.lora.max_lora_rank, self.options.lora_target_modules, trtllm_modules
            )
            if lora_modules is not None else None
        )
        self.stats = StatsPoller(self._stats_source, self.options.stats_interval_s, self.options.stats_timeout_s)
        self.llm: Any = None
        self._support: ParamSupport | None = None  # set at start, from what the loaded model can do

    def register_metrics(self, registry: CollectorRegistry) -> None:
        """Put the TensorRT-LLM iteration-stats gauges on `registry` (the server's, for its /metrics)."""
        self.stats.register(registry)

    def _lora_modules(self) -> list[str]:
        """TensorRT-LLM LoRA target modules: the option, else those of the preloaded adapters, else [] (all)."""
        if self.options.lora_target_modules:
            return list(self.options.lora_target_modules)
        lora, hf_modules = self.config.lora, set[str]()
        for name, path in lora.adapters.items():
            try:
                cfg = read_adapter_config(adapter_paths.confine(path, lora.adapter_roots, relative_to_cwd=True),
                                          field=f"adapters.{name}")
            except errors.GatewayError as exc:
                raise ConfigError(f"executor.lora.{exc.message}") from exc
            modules = cfg.get("target_modules") or ()
            hf_modules.update([modules] if isinstance(modules, str) else modules)
        return trtllm_modules(sorted(hf_modules))

    def _stats_source(self, timeout: float) -> Any:
        return self.llm.get_stats_async(timeout)

    # -- lifecycle ------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        model = self.config.model
        log.info("loading %s with TensorRT-LLM %s (%s backend)", model, self.api.version, self.options.backend)
        try:
            if self.options.start_in_thread:  # minutes of loading must not stall the server's loop (health, RPCs)
                self.llm = await asyncio.to_thread(self.api.llm_cls, **self.llm_kwargs)
            else:
                self.llm = self.api.llm_cls(**self.llm_kwargs)
        except Exception as exc:  # noqa: BLE001 - any start-up failure becomes one clear configuration error
            raise ConfigError(f"executor.model: TensorRT-LLM could not load {model}: {type(exc).__name__}: {exc}") from exc
        self._info = self._model_info()
        if self.options.stats_interval_s > 0:
            self.stats.start()
        self._health = Health.SERVING

    def _model_info(self) -> ServedModel:
        files, tok = CheckpointFiles.read(self.config.model), self.llm.tokenizer
        pretrained = files.config.get("pretrained_config", files.config)  # TensorRT engine dirs nest the model config
        build = files.config.get("build_config", {})
        max_len = (self.options.max_seq_len or getattr(getattr(self.llm, "args", None), "max_seq_len", None)
                   or build.get("max_seq_len") or pretrained.get("max_position_embeddings") or 4096)
        vocab = hf_checkpoint.vocab_size(pretrained.get("vocab_size") or getattr(tok, "vocab_size", None),
                                         self.config.model)
        api, opts = self.api, self.options
        logprobs_on = opts.backend == "pytorch" or opts.gather_generation_logits
        caps = dataclasses.replace(
            self._capabilities(self.spec),
            guided=GUIDED_KINDS if opts.guided_decoding_backend and api.guided_cls else (),
            logprobs=logprobs_on,
            max_top_logprobs=opts.max_top_logprobs if logprobs_on else 0,
            chat_template=hf_checkpoint.has_chat_template(tok),
            tokenize=tok is not None,
            logit_bias=False,
            min_p="min_p" in api.sampling_fields,
        )
        self._support = ParamSupport(api.sampling_fields, bool(caps.guided), logprobs_on, caps.max_top_logprobs,
                                     caps.num_draft_tokens)
        return ServedModel(self.served_name, self.name, f"tensorrt_llm {api.version}", int(max_len), vocab,
                         files.eos_token_ids(pretrained, tok), caps)

    def health(self) -> Health:
        if self._health is Health.SERVING:
            executor = getattr(self.llm, "_executor", None)  # what generate_async itself checks (reference §10)
            if executor is None or (hasattr(executor, "is_shutdown") and executor.is_shutdown()):
                self._health = Health.DEAD
        return self._health

    async def shutdown(self) -> None:
        await self.stats.stop()
        for rid in list(self._requests):
            await self.abort(rid)
        if self.llm is not None:
            await asyncio.to_thread(self.llm.shutdown)
        self._health = Health.STARTING

    # -- generation -----------------------------------------------------------------------------------------------

    def _decode(self, token_ids: list[int]) -> str:
        return hf_checkpoint.decode(self.llm.tokenizer, token_ids)

    async def tokenize(
        self, model: str, *, text: str | None = None, messages: Sequence[ChatMessage] | None = None,
        add_special_tokens: bool = True,
    ) -> list[int]:
        self._check_model(model)
        tokenizer = self._ready(self.llm).tokenizer
        if tokenizer is None:
            raise errors.Unimplemented("the model was loaded without a tokenizer", field="text")
        return hf_checkpoint.tokenize(tokenizer, text, messages, add_special_tokens)

    def _submit(self, request: GenerateRequest, lora_request: Any) -> Any:
        llm, api = self._ready(self.llm), self.api
        assert self._support is not None  # set by start() before the server routes any request here
        kw = sampling_kwargs(request, self._support)
        if "guided_decoding" in kw:
            kw["guided_decoding"] = api.guided_cls(**kw["guided_decoding"])  # type: ignore[misc]
        p = request.prompt
        inputs: Any = p.text
        if p.token_ids is not None:
            inputs = list(p.token_ids)
        elif p.messages:  # the server has checked that the model has a chat template, hence a tokenizer
            inputs = hf_checkpoint.render(llm.tokenizer, p.messages, request.tools)
        extra: dict[str, Any] = {}
        if request.priority and "priority" in api.generate_params:  # newest API: a float in [0, 1], default 0.5
            extra["priority"] = min(max(0.5 + request.priority / 2000, 0.0), 1.0)
        try:
            return llm.generate_async(
                inputs=inputs, sampling_params=api.sampling_params_cls(**kw), lora_request=lora_request,
                streaming=True, **extra,
            )
        except RuntimeError as exc:
            if "shutting down" in str(exc) or self.health() is Health.DEAD:  # "LLM is shutting down"
                self._health = Health.DEAD
                raise errors.EngineDead(f"TensorRT-LLM refused the request: {exc}") from exc
            raise errors.Internal(f"TensorRT-LLM failed to submit the request: {exc}") from exc
        except (ValueError, TypeError) as exc:  # _check_arguments / SamplingParams validation: this request is bad
            raise errors.InvalidArgument(f"TensorRT-LLM rejected the request: {exc}") from exc

    async def _stream(self, request: GenerateRequest, adapter: Adapter | None) -> AsyncGenerator[TokenDelta, None]:
        lora_request = adapter.lora_request(self.api.lora_request_cls) if adapter is not None else None
        result = self._requests[request.request_id] = self._submit(request, lora_request)
        api = self.api
        try:
            stream = deltas(request, result, self._decode, api.fatal_errors, api.request_errors)
            async with contextlib.aclosing(stream):
                async for delta in stream:
                    yield delta
        finally:  # finished, failed, or closed by the server on cancel/deadline/disconnect
            self._requests.pop(request.request_id, None)
            if not result.finished:
                abort_result(result)

    def _engine_load(self) -> dict[str, Any]:
        """From the latest iteration stats (`LLM.get_stats_async`: numActiveRequests, numQueuedRequests,
        kvCacheStats{maxNumBlocks, usedNumBlocks, tokensPerBlock}); nothing before the first, or with stats off."""
        return load_from_stats(self.stats.latest)

    async def abort(self, request_id: str) -> bool:
        result = self._requests.get(request_id)
        if result is None or result.finished:
            return False
        abort_result(result)
        return True

    # -- adapters -------------------------------------------------------------------------------------------------

    async def load_adapter(self, model: str, name: str, path: str) -> AdapterInfo:
        registry = self._registry(model)
        return registry.info(registry.load(name, path))

    async def unload_adapter(self, model: str, name: str) -> None:
        self._registry(model).unload(name)

