"""`tensorrt_llm.sampling_params` [SP]: keyword-only slotted dataclasses; `_setup` fills end_id and stop ids."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True, kw_only=True)
class GuidedDecodingParams:
    json: Any = None  # str, pydantic model or dict
    regex: str | None = None
    grammar: str | None = None
    json_object: bool = False
    structural_tag: str | None = None

    def _validate(self) -> None:
        count = sum(x is not None for x in (self.json, self.regex, self.grammar, self.structural_tag)) + bool(
            self.json_object
        )
        if count > 1:
            raise ValueError(f"Only one guide can be set, got {count}")

    def __post_init__(self) -> None:
        self._validate()


@dataclass(slots=True, kw_only=True)
class SamplingParams:
    end_id: int | None = None
    pad_id: int | None = None
    max_tokens: int = 32
    bad: str | list[str] | None = None
    bad_token_ids: list[int] | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False
    embedding_bias: Any = None
    logits_processor: Any = None
    apply_batched_logits_processor: bool = False
    n: int = 1
    best_of: int | None = None
    use_beam_search: bool = False
    top_k: int | None = None
    top_p: float | None = None
    top_p_min: float | None = None
    top_p_reset_ids: int | None = None
    top_p_decay: float | None = None
    seed: int | None = None
    temperature: float | None = None
    min_tokens: int | None = None
    beam_search_diversity_rate: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    length_penalty: float | None = None
    early_stopping: int | None = None
    no_repeat_ngram_size: int | None = None
    min_p: float | None = None
    beam_width_array: list[int] | None = None
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    return_context_logits: bool = False
    return_generation_logits: bool = False
    exclude_input_from_output: bool = True
    return_encoder_output: bool = False
    return_perf_metrics: bool = False
    additional_model_outputs: list[str] | None = None
    lookahead_config: Any = None
    guided_decoding: GuidedDecodingParams | None = None
    ignore_eos: bool = False
    detokenize: bool = True
    add_special_tokens: bool = True
    truncate_prompt_tokens: int | None = None
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    # private state set by the LLM (not constructor arguments)
    _stream_interval: int = field(default=1, init=False, repr=False)
    _stop_word_ids: list[list[int]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.logprobs is True:
            self.logprobs = 1
        if self.best_of is None:
            self.best_of = self.n
        self._validate()

    def _greedy(self) -> bool:
        t, p, k = self.temperature, self.top_p, self.top_k
        return (t is None and p is None and k is None) or k == 1 or p == 0.0 or t == 0

    def _validate(self) -> None:
        if self.top_p is not None and not 0 <= self.top_p <= 1:
            raise ValueError(f"require 0 <= top_p <= 1, got top_p={self.top_p}")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"require top_k >= 0, got top_k={self.top_k}")
        if self.temperature is not None and self.temperature < 0:
            raise ValueError(f"require temperature >= 0, got temperature={self.temperature}")
        assert self.best_of is not None
        if self.best_of < self.n:
            raise ValueError(f"best_of ({self.best_of}) cannot be less than n ({self.n})")
        if self.best_of > 1 and self._greedy() and not os.environ.get("TLLM_ALLOW_N_GREEDY_DECODING"):
            raise ValueError(f"Greedy decoding in the LLM API does not allow multiple returns, got best_of={self.best_of}")
        if self.truncate_prompt_tokens is not None and self.truncate_prompt_tokens < 1:
            raise ValueError("truncate_prompt_tokens must be >= 1")

    def _setup(self, tokenizer: Any, hf_model_config: Any = None, generation_config: Any = None) -> SamplingParams:
        if tokenizer is None:
            raise ValueError("tokenizer is required to set up end_id when end_id is None")
        self.end_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if self.pad_id is None else self.pad_id
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        self._stop_word_ids = [tokenizer.encode(s, add_special_tokens=False) for s in stops]
        return self
