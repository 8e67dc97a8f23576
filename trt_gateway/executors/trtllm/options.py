"""The `trtllm` executor's options (`[executor.options]` / `--option KEY=VALUE`): one frozen dataclass, validated once.

Pure data: nothing here imports tensorrt_llm. `api.py` turns these options into `LLM(...)` arguments.
Every error names the option as `executor.options.<key>` and says why; what each value may be is `TrtllmOptions.TABLE`
(executors/option_table.py checks it). The schema is documented in docs/trtllm.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from trt_gateway.config import ConfigError, SpeculativeConfig
from trt_gateway.executors import hf_checkpoint
from trt_gateway.executors.option_table import WHERE, EngineOptions, OptionTable, PassThrough, check_speculation_source

BACKENDS = ("pytorch", "tensorrt")
GUIDED_BACKENDS = ("xgrammar", "llguidance")
DEFAULT = "default"  # cuda_graph_config left to TensorRT-LLM (on, for the PyTorch backend)

# TensorRT-LLM module names a LoRA may target, and the HF module names they map to by default [LORA-H].
LORA_MODULES = {
    "attn_q": "q_proj", "attn_k": "k_proj", "attn_v": "v_proj", "attn_qkv": "qkv_proj", "attn_dense": "o_proj",
    "mlp_h_to_4h": "gate_proj", "mlp_4h_to_h": "down_proj", "mlp_gate": "up_proj", "mlp_gate_up": "gate_up_proj",
}
HF_TO_LORA_MODULE = {hf: trt for trt, hf in LORA_MODULES.items()}


def trtllm_modules(hf_modules: Sequence[str]) -> list[str]:
    """HF module names (q_proj, ...) to TensorRT-LLM LoRA module names (attn_q, ...); unknown ones are skipped."""
    return sorted({HF_TO_LORA_MODULE[m] for m in hf_modules if m in HF_TO_LORA_MODULE})


@dataclass(frozen=True)
class SpecKind:
    """One speculative decoding method: which config class, which backends, what to report."""

    classes: tuple[str, ...]  # class names in tensorrt_llm.llmapi; the first one present wins
    backends: tuple[str, ...]
    capability: str  # Capabilities.speculative
    required: tuple[str, ...]
    draft_len_key: str | None  # the parameter that is the number of draft tokens per step


SPEC_KINDS: dict[str, SpecKind] = {
    # On PyTorch, EagleDecodingConfig already means EAGLE-3; Eagle3DecodingConfig arrived later (about 1.2/1.3).
    "Eagle3": SpecKind(("Eagle3DecodingConfig", "EagleDecodingConfig"), ("pytorch",), "eagle3",
                       ("max_draft_len", "speculative_model_dir"), "max_draft_len"),
    "Eagle": SpecKind(("EagleDecodingConfig",), BACKENDS, "eagle", ("max_draft_len", "speculative_model_dir"),
                      "max_draft_len"),
    "MTP": SpecKind(("MTPDecodingConfig",), ("pytorch",), "mtp", (), "num_nextn_predict_layers"),
    "NGram": SpecKind(("NGramDecodingConfig",), ("pytorch",), "ngram", ("max_draft_len", "max_matching_ngram_size"),
                      "max_draft_len"),
    "DraftTarget": SpecKind(("DraftTargetDecodingConfig",), ("pytorch",), "draft",
                            ("max_draft_len", "speculative_model_dir"), "max_draft_len"),
    "Medusa": SpecKind(("MedusaDecodingConfig",), ("tensorrt",), "medusa", ("max_draft_len",), "max_draft_len"),
    "Lookahead": SpecKind(("LookaheadDecodingConfig",), ("tensorrt",), "lookahead",
                          ("max_window_size", "max_ngram_size", "max_verification_set_size"), "max_window_size"),
    "AUTO": SpecKind(("AutoDecodingConfig",), ("pytorch",), "auto", (), None),
}
SPEC_REFUSED = {
    "UserProvided": "needs a Python Drafter object, which a config file cannot hold",
    "SaveState": "collects EAGLE-3 training data (it forces max_batch_size=1 and turns CUDA graphs off); not for serving",
}
_SPEC_ALIASES = {re.sub(r"[_\-\s]", "", k).lower(): k for k in (*SPEC_KINDS, *SPEC_REFUSED)}
_SPEC_ALIASES.update({"savehiddenstates": "SaveState"})

# `extra_llm_args` may not set the LLM arguments the schema owns (or ones the gateway relies on staying default).
EXTRA_LLM_ARGS = PassThrough(
    option="extra_llm_args",
    owned=frozenset({
        "model", "backend", "tensor_parallel_size", "pipeline_parallel_size", "dtype", "max_batch_size",
        "max_num_tokens", "max_seq_len", "kv_cache_config", "cuda_graph_config", "enable_chunked_prefill",
        "guided_decoding_backend", "speculative_config", "lora_config", "enable_lora", "stream_interval",
        "trust_remote_code", "tokenizer", "enable_iter_perf_stats", "gather_generation_logits",
    }),
    instead="a trtllm option",
    forbidden={
        "num_postprocess_workers": "must stay 0: with postprocess workers the streamed text/diffs are not filled in",
        "skip_tokenizer_init": "the gateway needs the tokenizer (text prompts, stop strings, chat templates)",
    },
)


@dataclass(frozen=True)
class SpeculativeSpec:
    """A validated speculative config: `kind` is a SPEC_KINDS key, `params` the config class's keyword arguments."""

    kind: str
    params: Mapping[str, Any]

    @property
    def capability(self) -> str:
        return SPEC_KINDS[self.kind].capability

    @property
    def num_draft_tokens(self) -> int:
        key = SPEC_KINDS[self.kind].draft_len_key
        value = self.params.get("max_draft_len") or (self.params.get(key) if key else None)
        return int(value or (1 if self.kind == "MTP" else 0))


@dataclass(frozen=True)
class TrtllmOptions(EngineOptions):
    backend: str = "pytorch"
    max_batch_size: int | None = None
    max_num_tokens: int | None = None
    max_seq_len: int | None = None
    kv_cache_config: Mapping[str, Any] | None = None
    cuda_graph_config: Mapping[str, Any] | str | None = DEFAULT
    guided_decoding_backend: str | None = None
    gather_generation_logits: bool = False
    lora_target_modules: tuple[str, ...] = ()
    allow_lora_cuda_graphs: bool = False
    allow_lora_speculation: bool = False
    stats_interval_s: float = 1.0
    stats_timeout_s: float = 2.0
    extra_llm_args: Mapping[str, Any] = field(default_factory=dict)

    TABLE: ClassVar[OptionTable] = EngineOptions.TABLE.extend(
        executor="trtllm",
        types={
            "backend": (str,), "guided_decoding_backend": (str,), "max_batch_size": (int,), "max_num_tokens": (int,),
            "max_seq_len": (int,), "gather_generation_logits": (bool,), "allow_lora_cuda_graphs": (bool,),
            "allow_lora_speculation": (bool,), "stats_interval_s": (int, float), "stats_timeout_s": (int, float),
            "kv_cache_config": (Mapping,), "extra_llm_args": (Mapping,), "cuda_graph_config": (Mapping, str),
            "lora_target_modules": (list, tuple),
        },
        minimum={"max_batch_size": 1, "max_num_tokens": 1, "max_seq_len": 1, "stats_interval_s": 0,
                 "stats_timeout_s": 0.01},
        nullable=frozenset({"max_batch_size", "max_num_tokens", "max_seq_len", "kv_cache_config", "cuda_graph_config",
                            "guided_decoding_backend"}),
        string_lists={"lora_target_modules": "module names"},
    )

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"{WHERE}.backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.guided_decoding_backend is not None and self.guided_decoding_backend not in GUIDED_BACKENDS:
            raise ConfigError(f"{WHERE}.guided_decoding_backend must be one of {', '.join(GUIDED_BACKENDS)} or null")
        if self.guided_decoding_backend == "llguidance" and self.backend != "pytorch":
            raise ConfigError(f"{WHERE}.guided_decoding_backend: llguidance needs backend 'pytorch'")
        if self.backend == "tensorrt":
            if self.cuda_graph_config != DEFAULT:
                raise ConfigError(f"{WHERE}.cuda_graph_config is a PyTorch-backend setting (backend is 'tensorrt')")
            if self.stream_interval != 1:
                raise ConfigError(f"{WHERE}.stream_interval is a PyTorch-backend setting (backend is 'tensorrt')")
        if isinstance(self.cuda_graph_config, str) and self.cuda_graph_config != DEFAULT:
            raise ConfigError(f"{WHERE}.cuda_graph_config must be a table, null (off) or absent (TensorRT-LLM default)")
        bad = sorted(set(self.lora_target_modules) - set(LORA_MODULES))
        if bad:
            raise ConfigError(f"{WHERE}.lora_target_modules: unknown module {bad[0]!r}; known: {', '.join(LORA_MODULES)}")
        EXTRA_LLM_ARGS.check(self.extra_llm_args)

    def speculative_spec(self, gateway: SpeculativeConfig) -> SpeculativeSpec | None:
        """The speculative config from options.speculative or from the gateway's --speculative flags (not both)."""
        check_speculation_source(self.speculative, gateway)
        if gateway.mode == "ngram":
            return self._spec({"decoding_type": "NGram", "max_draft_len": gateway.num_draft_tokens,
                               "max_matching_ngram_size": 4})
        if gateway.mode == "draft":
            return self._spec({"decoding_type": "DraftTarget", "max_draft_len": gateway.num_draft_tokens,
                               "speculative_model_dir": gateway.draft_model})
        return None if self.speculative is None else self._spec(self.speculative)

    def _spec(self, raw: Mapping[str, Any]) -> SpeculativeSpec:
        where = f"{WHERE}.speculative"
        params = dict(raw)
        given = params.pop("decoding_type", None)
        if not isinstance(given, str):
            raise ConfigError(f"{where}.decoding_type is required, one of {', '.join(SPEC_KINDS)}")
        kind = _SPEC_ALIASES.get(re.sub(r"[_\-\s]", "", given).lower())
        if kind in SPEC_REFUSED:
            raise ConfigError(f"{where}.decoding_type {given!r} is not supported by the gateway: {SPEC_REFUSED[kind]}")
        if kind is None:
            raise ConfigError(f"{where}.decoding_type: unknown {given!r}; one of {', '.join(SPEC_KINDS)}")
        spec = SPEC_KINDS[kind]
        if self.backend not in spec.backends:
            raise ConfigError(f"{where}: {kind} needs backend {' or '.join(repr(b) for b in spec.backends)}, "
                              f"got {self.backend!r}")
        if "speculative_model" in params:  # the 1.3 name; speculative_model_dir works on every 1.x
            params.setdefault("speculative_model_dir", params.pop("speculative_model"))
        missing = [k for k in spec.required if params.get(k) is None]
        if missing:
            raise ConfigError(f"{where}.{missing[0]} is required for {kind}")
        for key, value in params.items():
            if key.startswith(("max_", "num_")) and isinstance(value, int) and value <= 0:
                raise ConfigError(f"{where}.{key} must be > 0, got {value}")
        if "speculative_model_dir" in params:
            check_model_path(str(params["speculative_model_dir"]), f"{where}.speculative_model_dir")
        return SpeculativeSpec(kind, params)




def check_model_path(path: str, where: str) -> None:
    """A checkpoint or TensorRT engine directory, or an HF repo id that TensorRT-LLM downloads itself."""
    hf_checkpoint.check_model_path(path, where, "a checkpoint or engine directory")
