"""`vllm.config.speculative` (0.26): SpeculativeConfig (a pydantic dataclass in vLLM: unknown keys are errors) and the
Literal of methods."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

MTPModelTypes = Literal[
    "deepseek_mtp", "mimo_mtp", "mimo_v2_mtp", "glm4_moe_mtp", "glm4_moe_lite_mtp", "glm_ocr_mtp", "ernie_mtp",
    "nemotron_h_mtp", "exaone_moe_mtp", "exaone4_5_mtp", "qwen3_next_mtp", "qwen3_5_mtp", "longcat_flash_mtp",
    "minimax_m3_mtp", "bailing_hybrid_mtp", "mtp", "pangu_ultra_moe_mtp", "step3p5_mtp", "hy_v3_mtp", "gemma4_mtp",
    "inkling_mtp",
]
NgramGPUTypes = Literal["ngram_gpu"]
DFlashModelTypes = Literal["dflash"]
DSparkModelTypes = Literal["dspark"]
EagleModelTypes = Literal["eagle", "eagle3", "extract_hidden_states", MTPModelTypes, DFlashModelTypes]
SpeculativeMethod = Literal["ngram", "medusa", "mlp_speculator", "draft_model", "suffix", "custom_class", EagleModelTypes,
                            NgramGPUTypes, DSparkModelTypes]
_METHODS = set(get_args(SpeculativeMethod))


@dataclass
class SpeculativeConfig:  # vLLM 0.26's fields, in its order
    enforce_eager: bool | None = None
    num_speculative_tokens: int | None = None
    model: str | None = None
    method: str | None = None
    draft_tensor_parallel_size: int | None = None
    tensor_parallel_size: int | None = None
    quantization: str | None = None
    moe_backend: str | None = None
    attention_backend: str | None = None
    kv_cache_dtype: str | None = None
    max_model_len: int | None = None
    revision: str | None = None
    code_revision: str | None = None
    disable_padded_drafter_batch: bool = False
    use_local_argmax_reduction: bool = False
    use_heterogeneous_vocab: bool = False
    prompt_lookup_max: int | None = None
    prompt_lookup_min: int | None = None
    parallel_drafting: bool = False
    target_model_config: Any = None
    target_parallel_config: Any = None
    num_speculative_tokens_per_batch_size: Any = None
    draft_model_config: Any = None
    draft_parallel_config: Any = None
    suffix_decoding_max_tree_depth: int = 24
    suffix_decoding_max_cached_requests: int = 10000
    suffix_decoding_max_spec_factor: float = 1.0
    suffix_decoding_min_token_prob: float = 0.1
    draft_load_config: Any = None
    rejection_sample_method: str = "standard"
    synthetic_acceptance_rates: Any = None
    synthetic_acceptance_length: Any = None
    draft_sample_method: str = "greedy"

    def __post_init__(self) -> None:
        if self.method is not None and self.method not in _METHODS:
            raise ValueError(f"Input should be one of {sorted(_METHODS)} [input_value={self.method!r}]")
        if self.method is None and self.model is None:
            raise ValueError("num_speculative_tokens was provided but without speculative model.")
        if self.method in ("ngram", "ngram_gpu"):
            self.model = self.method
            if self.prompt_lookup_min is None and self.prompt_lookup_max is None:
                self.prompt_lookup_min = self.prompt_lookup_max = 5
            elif self.prompt_lookup_min is None:
                self.prompt_lookup_min = self.prompt_lookup_max
            elif self.prompt_lookup_max is None:
                self.prompt_lookup_max = self.prompt_lookup_min
            if self.num_speculative_tokens is None:
                raise ValueError("num_speculative_tokens must be provided with speculative model ngram")
        elif self.method in ("eagle", "eagle3", "draft_model", "medusa", "mlp_speculator"):
            path = Path(self.model or "")
            if not (path / "config.json").is_file():
                raise ValueError(f"Invalid repository ID or local directory specified: '{self.model}'")
            if self.num_speculative_tokens is None:  # vLLM reads it from the draft config
                n = json.loads((path / "config.json").read_text()).get("num_lookahead_tokens")
                if n is None:
                    raise ValueError("num_speculative_tokens was not provided and the draft config has none")
                self.num_speculative_tokens = n
        elif self.method == "mtp" and self.num_speculative_tokens is None:
            self.num_speculative_tokens = 1
