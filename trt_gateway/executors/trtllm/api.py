"""TensorRT-LLM, found and configured: import with a clear install hint, feature detection, and the `LLM(...)` kwargs.

Nothing pins a version. What exists is asked of the installed package (executors/engine_probe.py): config classes by
`getattr` on `tensorrt_llm.llmapi`, `generate_async` keywords by `inspect.signature`, `SamplingParams` fields by
`dataclasses.fields`, and LLM arguments by the pydantic `model_fields` of `TorchLlmArgs` / `TrtLlmArgs`
(shared/reference/trtllm_api.md §1, §14).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from trt_gateway.config import ConfigError, ExecutorConfig
from trt_gateway.executors import engine_probe as probe
from trt_gateway.executors.option_table import WHERE
from trt_gateway.executors.trtllm.options import DEFAULT, SPEC_KINDS, SpeculativeSpec, TrtllmOptions

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "the trtllm executor needs TensorRT-LLM, which cannot be imported here ({exc}). TensorRT-LLM is installed from "
    "NVIDIA's index, most simply by running the gateway inside NVIDIA's TensorRT-LLM container "
    "(nvcr.io/nvidia/tensorrt-llm/release) and installing this project there with "
    "`pip install 'trt-gateway[trtllm]'`; see docs/trtllm.md"
)


@dataclass(frozen=True)
class TrtApi:
    """The TensorRT-LLM symbols the executor uses, resolved once at start-up."""

    version: str
    backend: str
    llm_cls: type
    llmapi: ModuleType
    sampling_params_cls: type
    guided_cls: type | None
    lora_request_cls: type | None
    lora_config_cls: type | None
    llm_fields: frozenset[str] | None  # None: the args class could not be inspected; pass through, let LLM check
    generate_params: frozenset[str]
    sampling_fields: frozenset[str]
    fatal_errors: tuple[type[BaseException], ...]
    request_errors: tuple[type[BaseException], ...]


def load_api(backend: str) -> TrtApi:
    try:
        trt = importlib.import_module("tensorrt_llm")
        llmapi = importlib.import_module("tensorrt_llm.llmapi")
    except ImportError as exc:
        raise ConfigError(INSTALL_HINT.format(exc=exc)) from exc
    if backend == "tensorrt":
        llm_cls = probe.optional("tensorrt_llm._tensorrt_engine", "LLM")
        if llm_cls is None:
            raise ConfigError(f"{WHERE}.backend 'tensorrt': tensorrt_llm._tensorrt_engine.LLM is not importable")
        args_cls = getattr(llmapi, "TrtLlmArgs", None)
    else:
        llm_cls, args_cls = trt.LLM, getattr(llmapi, "TorchLlmArgs", None)
    sp_cls = getattr(trt, "SamplingParams", None) or llmapi.SamplingParams
    return TrtApi(
        version=str(getattr(trt, "__version__", "unknown")),
        backend=backend,
        llm_cls=llm_cls,
        llmapi=llmapi,
        sampling_params_cls=sp_cls,
        guided_cls=probe.first([("tensorrt_llm.llmapi", "GuidedDecodingParams"),
                                ("tensorrt_llm.sampling_params", "GuidedDecodingParams")]),
        lora_request_cls=probe.first([("tensorrt_llm.executor.request", "LoRARequest"),
                                      ("tensorrt_llm.executor", "LoRARequest")]),
        lora_config_cls=probe.first([("tensorrt_llm.lora_helper", "LoraConfig"),
                                     ("tensorrt_llm.lora_manager", "LoraConfig")]),
        llm_fields=probe.fields_of(args_cls),
        generate_params=probe.keywords(llm_cls.generate_async),
        sampling_fields=probe.init_fields(sp_cls),
        fatal_errors=probe.present(probe.optional("tensorrt_llm.executor", "CppExecutorError")),
        request_errors=probe.present(getattr(llmapi, "RequestError", None)),
    )


def llm_kwargs(
    api: TrtApi,
    opts: TrtllmOptions,
    config: ExecutorConfig,
    spec: SpeculativeSpec | None,
    lora_modules: Sequence[str] | None,
) -> dict[str, Any]:
    """Keyword arguments for `LLM(...)`. `lora_modules` is None when LoRA is off, else the target modules."""
    known = _known(api)
    kwargs: dict[str, Any] = {"model": config.model}
    wanted: dict[str, Any] = {
        "max_batch_size": opts.max_batch_size,
        "max_num_tokens": opts.max_num_tokens,
        "max_seq_len": opts.max_seq_len,
        "guided_decoding_backend": opts.guided_decoding_backend,
        "gather_generation_logits": opts.gather_generation_logits or None,
    }
    known.add(kwargs, opts.engine_arguments() | {k: v for k, v in wanted.items() if v is not None}, WHERE)
    if opts.stats_interval_s > 0:
        if api.llm_fields is None or "enable_iter_perf_stats" in api.llm_fields:
            kwargs["enable_iter_perf_stats"] = True  # without it the PyTorch backend's stats are always empty
        else:
            log.warning("this TensorRT-LLM has no enable_iter_perf_stats; iteration stats may stay empty")
    if opts.kv_cache_config is not None:
        kwargs["kv_cache_config"] = build(api, "KvCacheConfig", opts.kv_cache_config, f"{WHERE}.kv_cache_config")
    graphs = _cuda_graphs(api, opts, lora_on=lora_modules is not None)
    if graphs is not DEFAULT:
        kwargs["cuda_graph_config"] = graphs
    if spec is not None:
        if lora_modules is not None and not opts.allow_lora_speculation:
            raise ConfigError(
                "executor.lora: LoRA adapters cannot be combined with speculative decoding on TensorRT-LLM 1.0-1.2 "
                "(support arrived after 1.2, PR #12661); remove the adapter roots or the speculative config, or set "
                f"{WHERE}.allow_lora_speculation = true on a TensorRT-LLM that supports it"
            )
        kwargs["speculative_config"] = speculative_config(api, spec)
    if lora_modules is not None:
        kwargs["lora_config"] = lora_config(api, config, lora_modules)
        if api.backend == "tensorrt" and (api.llm_fields is None or "enable_lora" in api.llm_fields):
            kwargs["enable_lora"] = True  # a TRT-engine flag; the engine must have been built with the LoRA plugin
    known.add(kwargs, opts.extra_llm_args, f"{WHERE}.extra_llm_args")
    return kwargs


def _known(api: TrtApi) -> probe.KnownArguments:
    lacking = f"TensorRT-LLM {api.version} ({api.backend} backend) has no LLM argument"
    return probe.KnownArguments(api.llm_fields, lacking)


def _cuda_graphs(api: TrtApi, opts: TrtllmOptions, *, lora_on: bool) -> Any:
    """DEFAULT (leave TensorRT-LLM's default), None (off) or a CudaGraphConfig."""
    value = opts.cuda_graph_config
    if api.backend != "pytorch":
        return DEFAULT
    if lora_on and value is not None and not opts.allow_lora_cuda_graphs:
        if value != DEFAULT:
            raise ConfigError(
                f"{WHERE}.cuda_graph_config: LoRA outputs are wrong under CUDA graphs on TensorRT-LLM 1.0/1.1 (PR #5480); "
                f"set cuda_graph_config = null, or {WHERE}.allow_lora_cuda_graphs = true on 1.2+ (multi-LoRA CUDA "
                "graphs, PR #8279)"
            )
        log.info("LoRA is on: CUDA graphs turned off (cuda_graph_config=None); see allow_lora_cuda_graphs")
        return None
    if isinstance(value, Mapping):
        _known(api).require("cuda_graph_config", f"{WHERE}.cuda_graph_config")
        return build(api, "CudaGraphConfig", value, f"{WHERE}.cuda_graph_config")
    return value


def build(api: TrtApi, class_name: str, params: Mapping[str, Any], where: str) -> Any:
    """Instantiate a tensorrt_llm.llmapi config class, naming the option on any error."""
    cls = getattr(api.llmapi, class_name, None)
    if cls is None:
        raise ConfigError(f"{where}: TensorRT-LLM {api.version} has no tensorrt_llm.llmapi.{class_name}")
    return _instantiate(cls, params, where)


def _instantiate(cls: type, params: Mapping[str, Any], where: str) -> Any:
    fields = getattr(cls, "model_fields", None)
    if isinstance(fields, Mapping):
        unknown = sorted(set(params) - set(fields))
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}: {cls.__name__} has no such field; known: {', '.join(sorted(fields))}")
    try:
        return cls(**params)
    except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"{where}: {cls.__name__}: {exc}") from exc


def speculative_config(api: TrtApi, spec: SpeculativeSpec) -> Any:
    kind = SPEC_KINDS[spec.kind]
    where = f"{WHERE}.speculative"
    for name in kind.classes:
        cls = getattr(api.llmapi, name, None)
        if cls is not None:
            if name != kind.classes[0]:
                log.info("tensorrt_llm.llmapi has no %s; using %s (EAGLE-3 on the PyTorch backend)", kind.classes[0], name)
            return _instantiate(cls, spec.params, where)
    raise ConfigError(f"{where}: TensorRT-LLM {api.version} has none of {', '.join(kind.classes)} for {spec.kind}")


def lora_config(api: TrtApi, config: ExecutorConfig, modules: Sequence[str]) -> Any:
    if api.lora_config_cls is None:
        raise ConfigError("executor.lora: neither tensorrt_llm.lora_helper nor tensorrt_llm.lora_manager has LoraConfig")
    if api.lora_request_cls is None:
        raise ConfigError("executor.lora: tensorrt_llm.executor.request has no LoRARequest")
    lora = config.lora
    params: dict[str, Any] = {
        "lora_dir": [],  # adapters come per request (LoRARequest), not at start-up
        "max_lora_rank": lora.max_lora_rank,
        "max_loras": lora.max_loras,
        "max_cpu_loras": lora.max_cpu_loras,
        "lora_target_modules": list(modules),
    }
    return _instantiate(api.lora_config_cls, params, "executor.lora")
