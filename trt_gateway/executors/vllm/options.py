"""The `vllm` executor's options (`[executor.options]` / `--option KEY=VALUE`): one frozen dataclass, validated once.

Pure data: nothing here imports vllm. `api.py` turns these options into `AsyncEngineArgs(...)` keywords and
checks them against the installed vLLM. Every error names the option as `executor.options.<key>` and says why; what
each value may be is `VllmOptions.TABLE` (executors/option_table.py checks it). The schema is documented in
docs/vllm.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from trt_gateway.config import ConfigError, SpeculativeConfig
from trt_gateway.executors import hf_checkpoint
from trt_gateway.executors.option_table import WHERE, EngineOptions, OptionTable, PassThrough, check_speculation_source

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

# `extra_engine_args` may not set the AsyncEngineArgs fields the schema owns, nor request logging.
EXTRA_ENGINE_ARGS = PassThrough(
    option="extra_engine_args",
    owned=frozenset({
        "model", "served_model_name", "tokenizer", "skip_tokenizer_init", "trust_remote_code",
        "tensor_parallel_size", "pipeline_parallel_size", "dtype", "max_model_len", "gpu_memory_utilization",
        "max_num_seqs", "max_num_batched_tokens", "enable_prefix_caching", "enable_chunked_prefill", "enforce_eager",
        "load_format", "quantization", "kv_cache_dtype", "seed", "max_logprobs", "guided_decoding_backend",
        "structured_outputs_config", "speculative_config", "scheduling_policy", "stream_interval",
        "disable_log_stats", "enable_lora", "max_loras", "max_lora_rank", "max_cpu_loras",
    }),
    instead="a vllm option (or through the gateway's --max-loras / --speculative flags)",
    forbidden=dict.fromkeys(
        ("disable_log_requests", "enable_log_requests"),
        "request logging is the gateway's (server.log_requests); prompts are never logged by default",
    ),
)


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
class VllmOptions(EngineOptions):
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    enable_prefix_caching: bool | None = None
    enforce_eager: bool = False
    load_format: str | None = None  # "dummy": random weights, for benchmarks
    quantization: str | None = None
    kv_cache_dtype: str | None = None
    skip_tokenizer_init: bool = False  # token-id prompts only; no text in the output
    seed: int | None = None
    guided_decoding_backend: str | None = AUTO  # null: guided decoding off
    scheduling_policy: str = "fcfs"
    log_stats: bool = True  # engine statistics -> Prometheus (vLLM's disable_log_stats is the opposite)
    worker_multiproc_method: str | None = "spawn"  # VLLM_WORKER_MULTIPROC_METHOD, unless the environment sets it
    extra_engine_args: Mapping[str, Any] = field(default_factory=dict)

    TABLE: ClassVar[OptionTable] = EngineOptions.TABLE.extend(
        executor="vllm",
        types={
            "load_format": (str,), "quantization": (str,), "kv_cache_dtype": (str,), "guided_decoding_backend": (str,),
            "scheduling_policy": (str,), "worker_multiproc_method": (str,), "max_model_len": (int,),
            "max_num_seqs": (int,), "max_num_batched_tokens": (int,), "seed": (int,),
            "gpu_memory_utilization": (int, float), "enable_prefix_caching": (bool,), "enforce_eager": (bool,),
            "skip_tokenizer_init": (bool,), "log_stats": (bool,), "extra_engine_args": (Mapping,),
        },
        minimum={"max_model_len": 1, "max_num_seqs": 1, "max_num_batched_tokens": 1},
        nullable=frozenset({"max_model_len", "gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens",
                            "enable_prefix_caching", "load_format", "quantization", "kv_cache_dtype", "seed",
                            "guided_decoding_backend", "worker_multiproc_method"}),
    )

    def __post_init__(self) -> None:
        if self.scheduling_policy not in SCHEDULING_POLICIES:
            raise ConfigError(f"{WHERE}.scheduling_policy must be one of {', '.join(SCHEDULING_POLICIES)}, "
                              f"got {self.scheduling_policy!r}")
        if self.worker_multiproc_method not in (*MULTIPROC_METHODS, None):
            raise ConfigError(f"{WHERE}.worker_multiproc_method must be one of {', '.join(MULTIPROC_METHODS)} or null")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(f"{WHERE}.gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        EXTRA_ENGINE_ARGS.check(self.extra_engine_args)

    def speculative_spec(self, gateway: SpeculativeConfig) -> SpeculativeSpec | None:
        """options.speculative, or the gateway's --speculative flags (not both)."""
        check_speculation_source(self.speculative, gateway)
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
        check_model_path(model, f"{where}.model")
    return SpeculativeSpec(method, params, where)




def check_model_path(path: str, where: str) -> None:
    """A checkpoint directory, or an HF repo id that vLLM downloads itself."""
    hf_checkpoint.check_model_path(path, where, "a checkpoint directory or an HF repo id")
