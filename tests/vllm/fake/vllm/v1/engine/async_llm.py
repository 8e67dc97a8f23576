"""`vllm.v1.engine.async_llm.AsyncLLM`: the v1 async engine client, with vLLM's generate/abort contract.

- `generate()` is an async generator over one RequestOutputCollector. CancelledError or GeneratorExit inside it
  aborts the request (internal id) and re-raises; EngineDeadError and ValueError (request validation) pass through;
  anything else aborts and becomes EngineGenerateError (the cause chained).
- `abort(id)` takes the caller's (external) id and aborts every request that carries it; with
  `CONTROL.final_output_on_abort` (vLLM >= 0.10.1) the stream then ends with finish_reason "abort", without it
  (0.8-0.10.0) the generator is left waiting for ever, as it was.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Iterable, Mapping
from pathlib import Path
from typing import Any

from vllm import _fake
from vllm.lora.request import LoRARequest
from vllm.outputs import RequestOutput
from vllm.sampling_params import SamplingParams
from vllm.v1.engine._core import CoreRequest, EngineCore, internal_id
from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError
from vllm.v1.engine.output_processor import RequestOutputCollector


class AsyncLLM:
    def __init__(self, vllm_config: Any, executor_class: Any, log_stats: bool,
                 usage_context: Any = None, mm_registry: Any = None, log_requests: bool = True,
                 start_engine_loop: bool = True, stat_loggers: list[Any] | None = None,
                 aggregate_engine_logging: bool = False, client_addresses: dict[str, Any] | None = None,
                 client_count: int = 1, client_index: int = 0) -> None:
        self.vllm_config = vllm_config
        self.model_config = vllm_config.model_config
        self.log_requests = log_requests
        self.log_stats = log_stats or bool(stat_loggers)
        self.tokenizer = None if vllm_config.model_config.skip_tokenizer_init else _fake.FakeTokenizer()
        self.stat_loggers = [factory(vllm_config, 0) for factory in stat_loggers or []]
        for logger in self.stat_loggers:
            logger.log_engine_initialized()
        self.engine_core = EngineCore(vllm_config, self.stat_loggers, self.tokenizer)
        self._external: dict[str, list[str]] = {}  # external id -> internal ids
        self._loras: dict[int, LoRARequest] = {}  # the host-memory LRU cache, oldest first
        self._shutdown = False
        _fake.CONTROL.engines.append(self)

    @classmethod
    def from_vllm_config(cls, vllm_config: Any, start_engine_loop: bool = True, usage_context: Any = None,
                         stat_loggers: list[Any] | None = None, enable_log_requests: bool = False,
                         aggregate_engine_logging: bool = False, disable_log_stats: bool = False,
                         client_addresses: dict[str, Any] | None = None, client_count: int = 1,
                         client_index: int = 0) -> AsyncLLM:
        return cls(vllm_config, executor_class=None, log_stats=not disable_log_stats, stat_loggers=stat_loggers,
                   log_requests=enable_log_requests)

    @classmethod
    def from_engine_args(cls, engine_args: Any, start_engine_loop: bool = True, usage_context: Any = None,
                         stat_loggers: list[Any] | None = None) -> AsyncLLM:
        _fake.CONTROL.engine_args.append(engine_args)
        vllm_config = engine_args.create_engine_config(usage_context)
        if _fake.CONTROL.init_error is not None:
            raise _fake.CONTROL.init_error
        return cls(vllm_config, executor_class=None, log_stats=not engine_args.disable_log_stats,
                   stat_loggers=stat_loggers, log_requests=engine_args.enable_log_requests)

    # -- state -----------------------------------------------------------------------------------------------------

    @property
    def errored(self) -> bool:
        return self.engine_core.dead or self._shutdown

    @property
    def is_running(self) -> bool:
        return not self._shutdown  # vLLM: the output handler task is not done

    @property
    def is_stopped(self) -> bool:
        return self.errored

    @property
    def dead_error(self) -> BaseException:
        return EngineDeadError()

    async def check_health(self) -> None:
        if self.errored:
            raise self.dead_error

    def get_tokenizer(self) -> Any:  # a plain method in vLLM 0.26 (a coroutine in some older versions)
        if self.tokenizer is None:
            raise ValueError("Tokenizer not available when `skip_tokenizer_init=True`")
        return self.tokenizer

    def shutdown(self, timeout: float | None = None) -> None:
        self._shutdown = True
        task = self.engine_core.task
        if task is not None and not task.done() and not task.get_loop().is_closed():
            task.get_loop().call_soon_threadsafe(task.cancel)

    # -- requests --------------------------------------------------------------------------------------------------

    async def add_request(self, request_id: str, prompt: Any, params: SamplingParams, arrival_time: float | None = None,
                          lora_request: LoRARequest | None = None, tokenization_kwargs: dict[str, Any] | None = None,
                          trace_headers: Mapping[str, str] | None = None, priority: int = 0,
                          data_parallel_rank: int | None = None, prompt_text: str | None = None,
                          reasoning_ended: bool | None = None,
                          reasoning_parser_kwargs: dict[str, Any] | None = None) -> RequestOutputCollector:
        if self.errored:
            raise EngineDeadError()
        await asyncio.sleep(0)  # input processing (tokenization) yields to the loop in vLLM
        params = params.clone()
        prompt_text, prompt_ids = self._process_inputs(prompt, params, lora_request, priority)
        _fake.CONTROL.submissions.append({"request_id": request_id, "prompt": prompt, "params": params,
                                          "lora_request": lora_request, "priority": priority})
        rid = internal_id(request_id)
        queue = RequestOutputCollector(params.output_kind, rid)
        if lora_request is not None and lora_request.lora_int_id not in self._loras:
            self._load_lora(lora_request)  # vLLM loads an adapter on first use
        self._external.setdefault(request_id, []).append(rid)
        self.engine_core.add(CoreRequest(rid, request_id, prompt_text, prompt_ids, params, lora_request, queue))
        return queue

    def _process_inputs(self, prompt: Any, params: SamplingParams, lora_request: Any,
                        priority: int) -> tuple[str | None, list[int]]:
        """vLLM 0.26's InputProcessor.process_inputs, in its order: params.verify, LoRA, then the prompt. Priorities
        are not checked against the scheduling policy (FCFS ignores them)."""
        cfg = self.vllm_config
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be either SamplingParams or PoolingParams, but got {type(params).__name__}")
        params.verify(cfg.model_config, cfg.speculative_config, cfg.structured_outputs_config, self.tokenizer)
        if lora_request is not None and cfg.lora_config is None:
            raise ValueError(f"Got lora_request {lora_request} but LoRA is not enabled!")
        if isinstance(prompt, str):
            prompt = {"prompt": prompt}
        if isinstance(prompt, list):
            prompt = {"prompt_token_ids": prompt}
        if not isinstance(prompt, dict):
            raise TypeError("Prompt should be a string, list of tokens, or dictionary")
        if "prompt_token_ids" in prompt:
            text, ids = prompt.get("prompt"), list(prompt["prompt_token_ids"])
        elif "prompt" in prompt:
            if self.tokenizer is None:
                raise ValueError("Tokenizer not available when `skip_tokenizer_init=True`")
            text, ids = prompt["prompt"], self.tokenizer.encode(prompt["prompt"])
        else:
            raise TypeError("Prompt dictionary must contain text, tokens, or embeddings")
        max_len = cfg.model_config.max_model_len
        if not ids:
            raise ValueError("The decoder prompt cannot be empty")
        if len(ids) > max_len:
            raise ValueError(f"The decoder prompt (length {len(ids)}) is longer than the maximum model length of "
                             f"{max_len}. Make sure that `max_model_len` is no smaller than the number of text tokens.")
        if len(ids) == max_len:
            raise ValueError(f"The decoder prompt (length {len(ids)}) plus the number of requested output tokens (at "
                             f"least 1) is longer than the maximum model length of {max_len}. Make sure that "
                             "`max_model_len` is no smaller than the number of text tokens (prompt + requested "
                             "output tokens).")
        if self.tokenizer is not None:  # without a tokenizer vLLM checks no token id (the gateway does)
            vocab = cfg.model_config.get_vocab_size()
            if max(ids) > max(self.tokenizer.max_token_id, vocab - 1):
                raise ValueError(f"Token id {max(ids)} is out of vocabulary")
        return text, ids

    async def generate(self, prompt: Any, sampling_params: SamplingParams, request_id: str, *,
                       prompt_text: str | None = None, lora_request: LoRARequest | None = None,
                       tokenization_kwargs: dict[str, Any] | None = None,
                       trace_headers: Mapping[str, str] | None = None, priority: int = 0,
                       data_parallel_rank: int | None = None, reasoning_ended: bool | None = None,
                       reasoning_parser_kwargs: dict[str, Any] | None = None) -> AsyncGenerator[RequestOutput, None]:
        q: RequestOutputCollector | None = None
        try:
            q = await self.add_request(request_id, prompt, sampling_params, lora_request=lora_request,
                                       tokenization_kwargs=tokenization_kwargs, trace_headers=trace_headers,
                                       priority=priority, data_parallel_rank=data_parallel_rank)
            finished = False
            while not finished:
                out = q.get_nowait() or await q.get()
                finished = out.finished
                yield out
        except (asyncio.CancelledError, GeneratorExit):
            if q is not None:
                await self.abort(q.request_id, internal=True)
            raise
        except EngineDeadError:
            raise
        except ValueError:
            raise
        except Exception as e:
            if q is not None:
                await self.abort(q.request_id, internal=True)
            raise EngineGenerateError() from e

    async def abort(self, request_id: str | Iterable[str], internal: bool = False) -> None:
        ids = [request_id] if isinstance(request_id, str) else list(request_id)
        for rid in ids:
            _fake.CONTROL.aborted.append(rid)
            internals = [rid] if internal else self._external.pop(rid, [])
            for iid in internals:
                req = self.engine_core.remove(iid)
                if req is not None and _fake.CONTROL.final_output_on_abort:
                    self.engine_core.abort_output(req)
        await asyncio.sleep(0)  # an engine-core message in vLLM

    # -- LoRA ------------------------------------------------------------------------------------------------------

    def _load_lora(self, lora_request: LoRARequest) -> None:
        cfg = self.vllm_config.lora_config
        if cfg is None:
            raise ValueError("LoRA is not enabled. Use --enable-lora to enable LoRA.")
        path = Path(lora_request.lora_path)
        try:
            rank = json.loads((path / "adapter_config.json").read_text())["r"]
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"Loading lora {lora_request.lora_name} failed: No adapter found for "
                             f"{lora_request.lora_path}") from exc
        if rank > cfg.max_lora_rank:
            raise ValueError(f"LoRA rank {rank} is greater than max_lora_rank {cfg.max_lora_rank}.")
        self._loras[lora_request.lora_int_id] = lora_request
        while len(self._loras) > (cfg.max_cpu_loras or cfg.max_loras):
            del self._loras[next(iter(self._loras))]

    async def add_lora(self, lora_request: LoRARequest) -> bool:
        _fake.CONTROL.lora_calls.append(("add", lora_request))
        self._load_lora(lora_request)
        return True

    async def remove_lora(self, lora_id: int) -> bool:
        _fake.CONTROL.lora_calls.append(("remove", lora_id))
        return self._loras.pop(lora_id, None) is not None

    async def list_loras(self) -> set[int]:
        return set(self._loras)

    async def pin_lora(self, lora_id: int) -> bool:
        return lora_id in self._loras
