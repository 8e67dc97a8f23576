"""The `vllm` executor: vLLM's v1 async engine (`AsyncLLM`) behind the Executor contract, on the gateway's event loop.

Written against vLLM's sources (v1 `AsyncLLM`, 0.10 to 0.26+, features detected, no version pinned), checked against
vLLM 0.26.0's released sources, and tested against a double of that API (tests/vllm/fake); it has NOT yet run on a
GPU (docs/vllm.md says what is and is not verified).

`AsyncLLM` lives in this process and runs its engine core in a child process; its output handler is a task on the
gateway's loop, so no thread hop sits between vLLM and the gRPC writer. One request, as numbered steps:
1. map the request to `SamplingParams(output_kind=DELTA, ...)` (params; unmappable fields -> UNIMPLEMENTED
   naming the field) and the prompt to text or `{"prompt_token_ids": [...]}` (chat messages rendered here);
2. iterate `AsyncLLM.generate(prompt, params, request_id, lora_request=...)` and convert each DELTA output
   (stream: finish and stop reasons, logprobs, usage with cached tokens);
3. on client cancel, deadline or disconnect the server closes this generator, which closes vLLM's, which aborts the
   request in the engine (and `AsyncLLM.abort` is called too, idempotent); on the Abort RPC, `abort()` wakes the
   stream (stream.py) and aborts the engine request at once.

Modules of this package: options (the options schema), api (finding vLLM, feature detection, AsyncEngineArgs),
params (request mapping), stream (outputs -> deltas, abort), lora (adapters), stats (metrics). Shared with the
trtllm executor (executors/): external_engine (the request table, adapter pinning, health), hf_checkpoint
(config.json, EOS ids, chat rendering), adapter_registry (under lora), sampling_map and request_output (the
SamplingParams and outputs both engines shape alike), option_table, engine_probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import logging
import os
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from trt_gateway import errors
from trt_gateway.config import ConfigError, ExecutorConfig
from trt_gateway.executors import hf_checkpoint
from trt_gateway.executors.adapter_registry import Adapter
from trt_gateway.executors.base import Health
from trt_gateway.executors.external_engine import ExternalEngineExecutor
from trt_gateway.executors.hf_checkpoint import CheckpointFiles
from trt_gateway.executors.sampling_map import GUIDED_KINDS
from trt_gateway.executors.vllm.api import VllmApi, engine_kwargs, load_api
from trt_gateway.executors.vllm.lora import VllmAdapters
from trt_gateway.executors.vllm.options import VllmOptions, check_model_path
from trt_gateway.executors.vllm.params import ParamSupport, sampling_kwargs
from trt_gateway.executors.vllm.stats import EngineStats
from trt_gateway.executors.vllm.stream import ErrorKinds, RequestState, deltas
from trt_gateway.types import AdapterInfo, ChatMessage, GenerateRequest, Prompt, ServedModel, TokenDelta, Tool

log = logging.getLogger(__name__)


class VllmExecutor(ExternalEngineExecutor[VllmAdapters]):
    name = "vllm"
    dead_message = "the vLLM engine is gone"

    def __init__(self, config: ExecutorConfig) -> None:
        # Everything checkable without a GPU is checked here, so a bad config fails before any model loads.
        super().__init__(config)
        self.options = VllmOptions.parse(config.options)
        check_model_path(config.model, "executor.model")
        self.spec = self.options.speculative_spec(config.speculative)
        self.api: VllmApi = load_api()
        self.engine_kwargs = engine_kwargs(self.api, self.options, config, self.spec, self.served_name)
        self.adapters = (VllmAdapters(self.served_name, config.lora.max_lora_rank, self.api.lora_request_cls)
                         if config.lora.adapter_roots else None)
        self.stats = EngineStats()
        self.engine: Any = None
        self.tokenizer: Any = None  # None with skip_tokenizer_init
        self._requests: dict[str, RequestState] = {}
        self._support: ParamSupport | None = None  # set at start
        self._errors = ErrorKinds(self.api.dead_errors, self.api.request_errors, self.api.client_errors)

    def register_metrics(self, registry: CollectorRegistry) -> None:
        """Put the engine-statistics collectors (`trt_gateway_vllm_*`) on the server's registry."""
        self.stats.register(registry)

    # -- lifecycle ------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        model, api = self.config.model, self.api
        if self.options.worker_multiproc_method:
            # The engine core must not be forked from a process that already runs gRPC's threads.
            os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", self.options.worker_multiproc_method)
        log.info("loading %s with vLLM %s", model, api.version)
        extra: dict[str, Any] = {}
        if self.options.log_stats and "stat_loggers" in api.from_engine_args_params:
            extra["stat_loggers"] = [self.stats.logger_class(api.stat_logger_base)]
        try:
            args = api.engine_args_cls(**self.engine_kwargs)
            build = functools.partial(api.engine_cls.from_engine_args, args, **extra)
            # Minutes of loading and compiling must not stall the server's loop (health checks, other RPCs).
            self.engine = await asyncio.to_thread(build) if self.options.start_in_thread else build()
            if not self.options.skip_tokenizer_init:
                self.tokenizer = await _maybe_await(self.engine.get_tokenizer())
            # an attribute of AsyncLLM (0.26 has no get_model_config(); some older versions had only that coroutine)
            model_config = getattr(self.engine, "model_config", None) or await self.engine.get_model_config()
        except Exception as exc:  # noqa: BLE001 - any start-up failure becomes one clear configuration error
            raise ConfigError(f"executor.model: vLLM could not load {model}: {type(exc).__name__}: {exc}") from exc
        self._info = self._model_info(model_config)
        self._health = Health.SERVING

    def _model_info(self, model_config: Any) -> ServedModel:
        files, tok = CheckpointFiles.read(self.config.model), self.tokenizer
        opts, api = self.options, self.api
        vocab = hf_checkpoint.vocab_size(model_config.get_vocab_size() if hasattr(model_config, "get_vocab_size")
                                         else files.config.get("vocab_size"), self.config.model)
        guided_field = api.guided_field if opts.guided_decoding_backend is not None and api.guided_cls else None
        caps = dataclasses.replace(
            self._capabilities(self.spec),
            guided=GUIDED_KINDS if guided_field and tok is not None else (),
            logprobs=True,
            max_top_logprobs=opts.max_top_logprobs,
            chat_template=hf_checkpoint.has_chat_template(tok),
            tokenize=tok is not None,
            # vLLM refuses min_p and logit_bias on an engine with a speculative_config (_validate_spec_decode)
            logit_bias="logit_bias" in api.sampling_fields and self.spec is None,
            min_p="min_p" in api.sampling_fields and self.spec is None,
        )
        self._support = ParamSupport(
            fields=api.sampling_fields,
            guided_field=guided_field,
            max_top_logprobs=opts.max_top_logprobs,
            speculative=self.spec is not None,
            spec_draft_tokens=caps.num_draft_tokens,
            tokenizer=tok is not None,
        )
        max_len = int(model_config.max_model_len)
        eos_ids = files.eos_token_ids(files.config, tok)
        return ServedModel(self.served_name, self.name, f"vllm {api.version}", max_len, vocab, eos_ids, caps)

    def health(self) -> Health:
        if self._health is Health.SERVING and getattr(self.engine, "errored", False):
            self._health = Health.DEAD  # the engine core process died (AsyncLLM.errored)
        return self._health

    async def shutdown(self) -> None:
        for rid in list(self._requests):
            await self.abort(rid)
        if self.engine is not None:
            engine, self.engine = self.engine, None
            await asyncio.to_thread(engine.shutdown)
        self._health = Health.STARTING

    # -- generation -----------------------------------------------------------------------------------------------

    def _decode(self, token_ids: list[int]) -> str:
        return hf_checkpoint.decode(self.tokenizer, token_ids)

    def _prompt(self, p: Prompt, tools: Sequence[Tool] = ()) -> Any:
        if p.token_ids is not None:
            return {"prompt_token_ids": list(p.token_ids)}  # vllm.inputs.TokensPrompt
        field = "messages" if p.messages else "text"
        if self.tokenizer is None:
            raise errors.Unimplemented(f"{field}: the engine runs with skip_tokenizer_init; send token_ids",
                                       field=field)
        if p.messages:
            return {"prompt_token_ids": hf_checkpoint.render(self.tokenizer, p.messages, tools)}
        return p.text or ""

    async def tokenize(
        self, model: str, *, text: str | None = None, messages: Sequence[ChatMessage] | None = None,
        add_special_tokens: bool = True,
    ) -> list[int]:
        self._check_model(model)
        self._ready(self.engine)
        if self.tokenizer is None:
            raise errors.Unimplemented("the engine runs with skip_tokenizer_init: it has no tokenizer", field="text")
        return hf_checkpoint.tokenize(self.tokenizer, text, messages, add_special_tokens)

    def _sampling_params(self, request: GenerateRequest) -> Any:
        assert self._support is not None  # set by start() before the server routes any request here
        kw = sampling_kwargs(request, self._support)
        guided = self._support.guided_field
        if guided is not None and guided in kw:
            kw[guided] = self.api.guided_cls(**kw[guided])  # type: ignore[misc]
        try:
            return self.api.sampling_params_cls(output_kind=self.api.delta_kind, **kw)
        except self.api.client_errors as exc:  # SamplingParams validates itself (VLLMValidationError)
            raise errors.InvalidArgument(f"vLLM rejected the sampling parameters: {exc}") from exc

    async def _stream(self, request: GenerateRequest, adapter: Adapter | None) -> AsyncGenerator[TokenDelta, None]:
        engine, rid = self._ready(self.engine), request.request_id
        kwargs: dict[str, Any] = {}
        if adapter is not None:
            kwargs["lora_request"] = adapter.lora_request(self.api.lora_request_cls)
        if request.priority and self.options.scheduling_policy == "priority" and "priority" in self.api.generate_params:
            kwargs["priority"] = -request.priority  # vLLM runs lower values first; the gateway higher ones
        params, prompt = self._sampling_params(request), self._prompt(request.prompt, request.tools)
        state = self._requests[rid] = RequestState(rid)
        stream = engine.generate(prompt, params, rid, **kwargs)
        try:
            async with contextlib.aclosing(deltas(request, stream, state, self._decode, self._errors)) as out:
                async for delta in out:
                    yield delta
        finally:  # finished, failed, or closed by the server on cancel/deadline/disconnect
            await _aclose(stream)  # vLLM's generate aborts its request on GeneratorExit
            if self._requests.get(rid) is state:
                del self._requests[rid]
            if not state.finished:
                await self._engine_abort(rid)

    def _engine_load(self) -> dict[str, Any]:
        """From the latest SchedulerStats vLLM handed its stat loggers (num_running_reqs, num_waiting_reqs,
        kv_cache_usage). vLLM's stats carry no block size or count, so those stay unknown (0)."""
        latest = self.stats.latest
        names = (("num_running", "running_requests", int), ("num_waiting", "waiting_requests", int),
                 ("kv_cache_usage", "kv_cache_usage", float))
        return {field: kind(latest[key]) for field, key, kind in names if key in latest}

    async def abort(self, request_id: str) -> bool:
        state = self._requests.get(request_id)
        if state is None or state.finished:
            return False
        state.wake_for_abort()
        await self._engine_abort(request_id)  # free the engine's request now, whatever the stream is doing
        return True

    async def _engine_abort(self, request_id: str) -> None:
        if self.engine is None or self.health() is Health.DEAD:
            return
        try:
            await self.engine.abort(request_id)  # idempotent: unknown or finished ids are ignored
        except Exception:  # noqa: BLE001 - cleanup must not mask the request's own outcome
            log.warning("vLLM abort of request %s failed", request_id, exc_info=True)

    # -- adapters -------------------------------------------------------------------------------------------------

    async def load_adapter(self, model: str, name: str, path: str) -> AdapterInfo:
        adapters = self._registry(model)
        return await adapters.add(self._ready(self.engine), name, path)

    async def unload_adapter(self, model: str, name: str) -> None:
        adapters = self._registry(model)
        await adapters.remove(self._ready(self.engine), name)


async def _maybe_await(value: Any) -> Any:
    """`AsyncLLM.get_tokenizer()` is a plain method in vLLM 0.26 and a coroutine in some older versions."""
    return await value if inspect.isawaitable(value) else value


async def _aclose(stream: Any) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()

