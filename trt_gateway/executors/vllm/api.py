"""vLLM, found and configured: a lazy import with a clear install hint, feature detection, and `AsyncEngineArgs` kwargs.

Nothing pins a version. What exists is asked of the installed package (executors/engine_probe.py): the v1 `AsyncLLM`
(or the `vllm.AsyncLLMEngine` alias), `AsyncEngineArgs` fields by `dataclasses.fields`, `SamplingParams` fields by
msgspec's `__struct_fields__`, the structured-output parameter class (`StructuredOutputsParams`, else the older
`GuidedDecodingParams`), the speculative methods by `typing.get_args(SpeculativeMethod)`, and method keywords by
`inspect.signature`.
"""

from __future__ import annotations

import importlib
import typing
from dataclasses import dataclass
from typing import Any

from trt_gateway.config import ConfigError, ExecutorConfig
from trt_gateway.executors import engine_probe as probe
from trt_gateway.executors.option_table import WHERE
from trt_gateway.executors.vllm.options import AUTO, SpeculativeSpec, VllmOptions

INSTALL_HINT = (
    "the vllm executor needs vLLM with its v1 engine (vllm.v1.engine.async_llm), which cannot be imported here "
    "({exc}). Install it on a machine with an NVIDIA GPU with `pip install 'trt-gateway[vllm]'` (vLLM pins its own "
    "torch build: install into a fresh environment, or install vLLM first); see docs/vllm.md"
)


@dataclass(frozen=True)
class VllmApi:
    """The vLLM symbols the executor uses, resolved once when the executor is built."""

    version: str
    engine_cls: Any  # vllm.v1.engine.async_llm.AsyncLLM
    engine_args_cls: Any  # vllm.engine.arg_utils.AsyncEngineArgs (a dataclass)
    engine_fields: frozenset[str] | None  # None: not inspectable; pass through and let vLLM check
    from_engine_args_params: frozenset[str]
    generate_params: frozenset[str]
    sampling_params_cls: Any
    sampling_fields: frozenset[str]
    delta_kind: Any  # RequestOutputKind.DELTA
    guided_cls: type | None  # StructuredOutputsParams (new) or GuidedDecodingParams (old)
    guided_field: str | None  # the SamplingParams field it goes in: "structured_outputs" or "guided_decoding"
    structured_config_cls: type | None  # vllm.config.StructuredOutputsConfig, the engine-side backend choice
    lora_request_cls: type
    stat_logger_base: type | None
    spec_methods: frozenset[str] | None  # None: not inspectable
    spec_fields: frozenset[str] | None
    dead_errors: tuple[type[BaseException], ...]  # the engine is gone
    request_errors: tuple[type[BaseException], ...]  # one request failed inside vLLM
    client_errors: tuple[type[BaseException], ...]  # vLLM rejected one request's input


def _literal_values(alias: Any) -> frozenset[str] | None:
    """The strings of a (possibly nested) typing.Literal alias, e.g. vllm.config.speculative.SpeculativeMethod."""
    if alias is None:
        return None
    out: set[str] = set()
    for arg in typing.get_args(alias):
        if isinstance(arg, str):
            out.add(arg)
        else:
            out |= _literal_values(arg) or set()
    return frozenset(out) or None


def load_api() -> VllmApi:
    try:
        vllm = importlib.import_module("vllm")
    except ImportError as exc:
        raise ConfigError(INSTALL_HINT.format(exc=exc)) from exc
    engine_cls = probe.optional("vllm.v1.engine.async_llm", "AsyncLLM")
    if engine_cls is None:
        alias = getattr(vllm, "AsyncLLMEngine", None)  # the v1 class since 0.11 removed the v0 engine
        if alias is None or "v1" not in getattr(alias, "__module__", ""):
            raise ConfigError(INSTALL_HINT.format(exc=f"vLLM {getattr(vllm, '__version__', '?')} has no v1 AsyncLLM"))
        engine_cls = alias
    sampling_mod = importlib.import_module("vllm.sampling_params")
    sp_cls = getattr(vllm, "SamplingParams", None) or sampling_mod.SamplingParams
    sampling_fields = probe.init_fields(sp_cls)
    guided_cls, guided_field = None, None
    for cls_name, field_name in (("StructuredOutputsParams", "structured_outputs"),
                                 ("GuidedDecodingParams", "guided_decoding")):
        cls = getattr(sampling_mod, cls_name, None)
        if cls is not None and field_name in sampling_fields:
            guided_cls, guided_field = cls, field_name
            break
    args_cls = getattr(vllm, "AsyncEngineArgs", None) or importlib.import_module("vllm.engine.arg_utils").AsyncEngineArgs
    spec_cls = probe.first([("vllm.config", "SpeculativeConfig"), ("vllm.config.speculative", "SpeculativeConfig")])
    # vLLM 0.26's validation errors are ValueErrors (VLLMValidationError); VLLMClientError is not in 0.26 and is
    # looked up only in case a later version raises it instead
    client_error = probe.optional("vllm.exceptions", "VLLMClientError")
    return VllmApi(
        version=str(getattr(vllm, "__version__", "unknown")),
        engine_cls=engine_cls,
        engine_args_cls=args_cls,
        engine_fields=probe.fields_of(args_cls),
        from_engine_args_params=probe.keywords(engine_cls.from_engine_args),
        generate_params=probe.keywords(engine_cls.generate),
        sampling_params_cls=sp_cls,
        sampling_fields=sampling_fields,
        delta_kind=sampling_mod.RequestOutputKind.DELTA,
        guided_cls=guided_cls,
        guided_field=guided_field,
        structured_config_cls=probe.optional("vllm.config", "StructuredOutputsConfig"),
        lora_request_cls=importlib.import_module("vllm.lora.request").LoRARequest,
        stat_logger_base=probe.optional("vllm.v1.metrics.loggers", "StatLoggerBase"),
        spec_methods=_literal_values(probe.optional("vllm.config.speculative", "SpeculativeMethod")),
        spec_fields=probe.fields_of(spec_cls) if spec_cls is not None else None,
        dead_errors=probe.present(probe.optional("vllm.v1.engine.exceptions", "EngineDeadError")),
        request_errors=probe.present(probe.optional("vllm.v1.engine.exceptions", "EngineGenerateError")),
        client_errors=probe.present(ValueError, TypeError, client_error),
    )


def engine_kwargs(
    api: VllmApi, opts: VllmOptions, config: ExecutorConfig, spec: SpeculativeSpec | None, served_name: str
) -> dict[str, Any]:
    """Keyword arguments for `AsyncEngineArgs(...)`, each checked against the installed vLLM's fields."""
    known = probe.KnownArguments(api.engine_fields, f"vLLM {api.version} has no AsyncEngineArgs field")
    kwargs: dict[str, Any] = {}
    always = {
        "model": config.model,
        "served_model_name": served_name,
        "max_logprobs": opts.max_top_logprobs,
        "disable_log_stats": not opts.log_stats,
    }
    wanted: dict[str, Any] = {
        "max_model_len": opts.max_model_len,
        "gpu_memory_utilization": opts.gpu_memory_utilization,
        "max_num_seqs": opts.max_num_seqs,
        "max_num_batched_tokens": opts.max_num_batched_tokens,
        "enable_prefix_caching": opts.enable_prefix_caching,
        "enable_chunked_prefill": opts.enable_chunked_prefill,
        "enforce_eager": opts.enforce_eager or None,
        "load_format": opts.load_format,
        "quantization": opts.quantization,
        "kv_cache_dtype": opts.kv_cache_dtype,
        "skip_tokenizer_init": opts.skip_tokenizer_init or None,
        "seed": opts.seed,
        "scheduling_policy": opts.scheduling_policy if opts.scheduling_policy != "fcfs" else None,
    }
    known.add(kwargs, always | opts.engine_arguments() | {k: v for k, v in wanted.items() if v is not None}, WHERE)
    # Per-request log lines at 1,000 requests a second help nobody; the gateway logs requests itself.
    if api.engine_fields is not None and "enable_log_requests" in api.engine_fields:
        kwargs["enable_log_requests"] = False
    elif api.engine_fields is not None and "disable_log_requests" in api.engine_fields:
        kwargs["disable_log_requests"] = True
    backend = opts.guided_decoding_backend
    if backend not in (None, AUTO):
        kwargs.update(_guided_backend(api, backend))
    if spec is not None:
        kwargs["speculative_config"] = speculative_config(api, spec)
    lora = config.lora
    if lora.adapter_roots:
        known.add(kwargs, {"enable_lora": True, "max_loras": lora.max_loras, "max_lora_rank": lora.max_lora_rank,
                           "max_cpu_loras": lora.max_cpu_loras}, "executor.lora")
    known.add(kwargs, opts.extra_engine_args, f"{WHERE}.extra_engine_args")
    return kwargs


def _guided_backend(api: VllmApi, backend: str) -> dict[str, Any]:
    fields = api.engine_fields or frozenset()
    if api.structured_config_cls is not None and "structured_outputs_config" in fields:
        try:
            return {"structured_outputs_config": api.structured_config_cls(backend=backend)}
        except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
            raise ConfigError(f"{WHERE}.guided_decoding_backend: {exc}") from exc
    if "guided_decoding_backend" in fields or api.engine_fields is None:
        return {"guided_decoding_backend": backend}
    raise ConfigError(f"{WHERE}.guided_decoding_backend: vLLM {api.version} has neither structured_outputs_config "
                      "nor guided_decoding_backend")


def speculative_config(api: VllmApi, spec: SpeculativeSpec) -> dict[str, Any]:
    """The `speculative_config` dict, its method and keys checked against the installed vLLM where it says."""
    where = spec.where
    if api.spec_methods is not None and spec.method not in api.spec_methods:
        hint = (" (vLLM's v1 engine gained draft-model speculation later; use method 'eagle3', 'eagle' or 'ngram', "
                "or a newer vLLM)") if spec.method == "draft_model" else ""
        raise ConfigError(f"{where}.method: vLLM {api.version} has no speculative method {spec.method!r}{hint}; "
                          f"known: {', '.join(sorted(api.spec_methods))}")
    if api.spec_fields is not None:
        unknown = sorted(set(spec.params) - api.spec_fields)
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}: vLLM's SpeculativeConfig has no such field; known: "
                              f"{', '.join(sorted(api.spec_fields))}")
    return dict(spec.params)
