"""The `vllm` executor's options (`[executor.options]` / `--option KEY=VALUE`): one frozen dataclass, validated once.

Pure data: nothing here imports vllm. `vllm_config.py` turns these options into `AsyncEngineArgs(...)` keywords and
checks them against the installed vLLM. Every error names the option as `executor.options.<key>` and says why. The
schema is documented in docs/vllm.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trt_gateway.config import ConfigError, SpeculativeConfig
from trt_gateway.executors.hf_checkpoint import check_model_path

WHERE = "executor.options"
AUTO = "auto"  # guided_decoding_backend: vLLM's own choice (the argument is not passed)
SCHEDULING_POLICIES = ("fcfs", "priority")
MULTIPROC_METHODS = ("spawn", "fork")

# vLLM `speculative_config["method"]` -> Capabilities.speculative. Methods that read a separate checkpoint (`model`)
# are in MODEL_METHODS; the MTP family speculates with the target model's own layers.
SPEC_CAPABILITY = {
    "ngram": "ngram", "ngram_gpu": "ngram", "suffix": "suffix", "draft_model": "draft", "eagle": "eagle",
    "eagle3": "eagle3", "mtp": "mtp", "medusa": "medusa", "mlp_speculator": "mlp_speculator",
}
MODEL_METHODS = frozenset({"draft_model", "eagle", "eagle3", "medusa", "mlp_speculator"})
NGRAM_LOOKUP_MAX = 4  # the gateway's --speculative ngram: match up to 4 tokens of the context, like the native engine

# AsyncEngineArgs fields the schema owns; `extra_engine_args` may not set them.
OWNED_ENGINE_ARGS = frozenset({
    "model", "served_model_name", "tokenizer", "skip_tokenizer_init", "trust_remote_code", "tensor_parallel_size",
    "pipeline_parallel_size", "dtype", "max_model_len", "gpu_memory_utilization", "max_num_seqs",
    "max_num_batched_tokens", "enable_prefix_caching", "enable_chunked_prefill", "enforce_eager", "load_format",
    "quantization", "kv_cache_dtype", "seed", "max_logprobs", "guided_decoding_backend", "structured_outputs_config",
    "speculative_config", "scheduling_policy", "stream_interval", "disable_log_stats", "enable_lora", "max_loras",
    "max_lora_rank", "max_cpu_loras",
})
FORBIDDEN_ENGINE_ARGS = {
    "disable_log_requests": "request logging is the gateway's (server.log_requests); prompts are never logged by default",
    "enable_log_requests": "request logging is the gateway's (server.log_requests); prompts are never logged by default",
}


@dataclass(frozen=True)
class SpeculativeSpec:
    """A validated vLLM `speculative_config` dict, and what the gateway reports for it."""

    method: str
    params: Mapping[str, Any]  # passed as AsyncEngineArgs(speculative_config=dict(params))
    where: str = f"{WHERE}.speculative"  # the config key errors name

    @property
    def capability(self) -> str:
        return SPEC_CAPABILITY.get(self.method, self.method)

    @property
    def num_draft_tokens(self) -> int:
        """0 when vLLM takes the number from the draft checkpoint's config."""
        return int(self.params.get("num_speculative_tokens") or 0)


@dataclass(frozen=True)
class VllmOptions:
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    dtype: str = "auto"
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    enable_prefix_caching: bool | None = None
    enable_chunked_prefill: bool | None = None
    enforce_eager: bool = False
    load_format: str | None = None  # "dummy": random weights, for benchmarks
    quantization: str | None = None
    kv_cache_dtype: str | None = None
    tokenizer: str | None = None
    skip_tokenizer_init: bool = False  # token-id prompts only; no text in the output
    trust_remote_code: bool = False
    seed: int | None = None
    max_top_logprobs: int = 20  # vLLM's max_logprobs
    guided_decoding_backend: str | None = AUTO  # null: guided decoding off
    speculative: Mapping[str, Any] | None = None  # vLLM's speculative_config, as a table
    scheduling_policy: str = "fcfs"
    stream_interval: int = 1
    log_stats: bool = True  # engine statistics -> Prometheus (vLLM's disable_log_stats is the opposite)
    start_in_thread: bool = True
    worker_multiproc_method: str | None = "spawn"  # VLLM_WORKER_MULTIPROC_METHOD, unless the environment sets it
    extra_engine_args: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> VllmOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"{WHERE}.{unknown[0]}: unknown vllm option; known: {', '.join(sorted(known))}")
        opts = cls(**{name: _check(name, value) for name, value in options.items()})
        opts._validate()
        return opts

    def _validate(self) -> None:
        if self.scheduling_policy not in SCHEDULING_POLICIES:
            raise ConfigError(f"{WHERE}.scheduling_policy must be one of {', '.join(SCHEDULING_POLICIES)}, "
                              f"got {self.scheduling_policy!r}")
        if self.worker_multiproc_method not in (*MULTIPROC_METHODS, None):
            raise ConfigError(f"{WHERE}.worker_multiproc_method must be one of {', '.join(MULTIPROC_METHODS)} or null")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(f"{WHERE}.gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        for key in self.extra_engine_args:
            if key in FORBIDDEN_ENGINE_ARGS:
                raise ConfigError(f"{WHERE}.extra_engine_args.{key}: {FORBIDDEN_ENGINE_ARGS[key]}")
            if key in OWNED_ENGINE_ARGS:
                raise ConfigError(f"{WHERE}.extra_engine_args.{key}: set it as a vllm option (or through the "
                                  "gateway's --max-loras / --speculative flags), not in extra_engine_args")

    def speculative_spec(self, gateway: SpeculativeConfig) -> SpeculativeSpec | None:
        """options.speculative, or the gateway's --speculative flags (not both)."""
        if self.speculative is not None and gateway.mode:
            raise ConfigError(f"{WHERE}.speculative and executor.speculative.mode ({gateway.mode!r}) are both set; "
                              "use one")
        if gateway.mode == "ngram":
            return _spec({"method": "ngram", "num_speculative_tokens": gateway.num_draft_tokens,
                          "prompt_lookup_max": NGRAM_LOOKUP_MAX, "prompt_lookup_min": 1}, "executor.speculative")
        if gateway.mode == "draft":
            return _spec({"method": "draft_model", "model": gateway.draft_model,
                          "num_speculative_tokens": gateway.num_draft_tokens}, "executor.speculative")
        return None if self.speculative is None else _spec(self.speculative, f"{WHERE}.speculative")


def _spec(raw: Mapping[str, Any], where: str) -> SpeculativeSpec:
    params = dict(raw)
    method = params.get("method")
    if method is None:
        if params.get("model") in ("ngram", "[ngram]"):  # vLLM's old spelling
            method = params["method"] = "ngram"
            del params["model"]
        else:
            raise ConfigError(f"{where}.method is required: one of {', '.join(SPEC_CAPABILITY)} (vLLM's "
                              "speculative_config method)")
    if not isinstance(method, str):
        raise ConfigError(f"{where}.method must be a string, got {type(method).__name__}")
    if method.endswith("_mtp"):  # deepseek_mtp, qwen3_next_mtp, ...: vLLM renames them to "mtp" itself
        params["method"] = method = "mtp"
    for key, value in params.items():
        if key.startswith(("num_", "prompt_lookup_")) and isinstance(value, int) and value <= 0:
            raise ConfigError(f"{where}.{key} must be > 0, got {value}")
    if method in ("ngram", "ngram_gpu", "suffix") and not params.get("num_speculative_tokens"):
        raise ConfigError(f"{where}.num_speculative_tokens is required for method {method!r}")
    if method in MODEL_METHODS:
        model = params.get("model")
        if not isinstance(model, str) or not model:
            raise ConfigError(f"{where}.model is required for method {method!r}: the draft / EAGLE checkpoint")
        check_model_path(model, f"{where}.model", "vLLM")
    return SpeculativeSpec(method, params, where)


_TYPES: dict[str, tuple[type, ...]] = {
    "dtype": (str,), "load_format": (str,), "quantization": (str,), "kv_cache_dtype": (str,), "tokenizer": (str,),
    "guided_decoding_backend": (str,), "scheduling_policy": (str,), "worker_multiproc_method": (str,),
    "tensor_parallel_size": (int,), "pipeline_parallel_size": (int,), "max_model_len": (int,), "max_num_seqs": (int,),
    "max_num_batched_tokens": (int,), "seed": (int,), "max_top_logprobs": (int,), "stream_interval": (int,),
    "gpu_memory_utilization": (int, float),
    "enable_prefix_caching": (bool,), "enable_chunked_prefill": (bool,), "enforce_eager": (bool,),
    "skip_tokenizer_init": (bool,), "trust_remote_code": (bool,), "log_stats": (bool,), "start_in_thread": (bool,),
    "speculative": (Mapping,), "extra_engine_args": (Mapping,),
}
_MINIMUM = {"tensor_parallel_size": 1, "pipeline_parallel_size": 1, "max_model_len": 1, "max_num_seqs": 1,
            "max_num_batched_tokens": 1, "max_top_logprobs": 0, "stream_interval": 1}
_NULLABLE = {"max_model_len", "gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens", "enable_prefix_caching",
             "enable_chunked_prefill", "load_format", "quantization", "kv_cache_dtype", "tokenizer", "seed",
             "guided_decoding_backend", "speculative", "worker_multiproc_method"}


def _check(name: str, value: Any) -> Any:
    where = f"{WHERE}.{name}"
    if value is None:
        if name in _NULLABLE:
            return None
        raise ConfigError(f"{where} may not be null")
    types = _TYPES[name]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        names = " or ".join("table" if t is Mapping else t.__name__ for t in types)
        raise ConfigError(f"{where} must be {names}, got {type(value).__name__} {value!r}")
    value = _any(value)  # isinstance against a runtime tuple narrows to object
    if name in _MINIMUM and value < _MINIMUM[name]:
        raise ConfigError(f"{where} must be >= {_MINIMUM[name]}, got {value}")
    if isinstance(value, Mapping):
        return dict(value)
    return float(value) if name == "gpu_memory_utilization" else value


def _any(value: Any) -> Any:
    return value
