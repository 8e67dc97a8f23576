"""`vllm.sampling_params` as in vLLM 0.26: SamplingParams (a msgspec Struct there: `__struct_fields__`, keyword
construction, an unknown keyword is a TypeError, validation in __post_init__ raising VLLMValidationError or ValueError,
`verify()` run by the engine's InputProcessor), RequestOutputKind, StructuredOutputsParams (a dataclass)."""

from __future__ import annotations

import copy
import enum
import math
from dataclasses import dataclass, field
from typing import Any

from vllm.exceptions import VLLMValidationError

_SAMPLING_EPS = 1e-5
_MAX_TEMP = 1e-2


class RequestOutputKind(enum.Enum):
    CUMULATIVE = 0  # the whole output so far in every RequestOutput
    DELTA = 1  # only what is new
    FINAL_ONLY = 2  # no intermediate outputs


@dataclass
class StructuredOutputsParams:
    json: str | dict | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None
    structural_tag: str | None = None
    _backend: str | None = field(default=None, init=False)
    _backend_was_auto: bool = field(default=False, init=False)

    def __post_init__(self) -> None:  # vLLM 0.26 raises plain ValueErrors here
        count = sum(getattr(self, f) is not None for f in ("json", "regex", "choice", "grammar", "json_object",
                                                              "structural_tag"))
        if count > 1:
            raise ValueError("You can only use one kind of structured outputs constraint but multiple are "
                             f"specified: {self.__dict__}")
        if count < 1:
            raise ValueError(f"You must use one kind of structured outputs constraint but none are specified: "
                             f"{self.__dict__}")


class SamplingParams:
    __struct_fields__: tuple[str, ...] = (  # vLLM 0.26's order
        "n", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature", "top_p", "top_k", "min_p",
        "seed", "stop", "stop_token_ids", "ignore_eos", "max_tokens", "min_tokens", "logprobs", "prompt_logprobs",
        "logprob_token_ids", "flat_logprobs", "detokenize", "skip_special_tokens", "spaces_between_special_tokens",
        "include_stop_str_in_output", "output_kind", "skip_clone", "output_text_buffer_length", "_eos_token_id",
        "_all_stop_token_ids", "structured_outputs", "logit_bias", "allowed_token_ids", "extra_args",
        "routed_experts_prompt_start", "bad_words", "_bad_words_token_ids", "skip_reading_prefix_cache",
        "thinking_token_budget", "repetition_detection",
    )
    _defaults: dict[str, Any] = {
        "n": 1, "presence_penalty": 0.0, "frequency_penalty": 0.0, "repetition_penalty": 1.0, "temperature": 1.0,
        "top_p": 1.0, "top_k": 0, "min_p": 0.0, "seed": None, "stop": None, "stop_token_ids": None,
        "ignore_eos": False, "max_tokens": 16, "min_tokens": 0, "logprobs": None, "prompt_logprobs": None,
        "logprob_token_ids": None, "flat_logprobs": False, "detokenize": True, "skip_special_tokens": True,
        "spaces_between_special_tokens": True, "include_stop_str_in_output": False,
        "output_kind": RequestOutputKind.CUMULATIVE, "skip_clone": False, "output_text_buffer_length": 0,
        "_eos_token_id": None, "_all_stop_token_ids": set(), "structured_outputs": None, "logit_bias": None,
        "allowed_token_ids": None, "extra_args": None, "routed_experts_prompt_start": 0, "bad_words": None,
        "_bad_words_token_ids": None, "skip_reading_prefix_cache": None, "thinking_token_budget": None,
        "repetition_detection": None,
    }

    def __init__(self, **kwargs: Any) -> None:
        for key in kwargs:
            if key not in self.__struct_fields__:
                raise TypeError(f"Unexpected keyword argument '{key}'")  # msgspec's wording
        for key in self.__struct_fields__:
            value = kwargs.get(key, self._defaults[key])
            setattr(self, key, copy.copy(value) if isinstance(value, (list, dict, set)) else value)
        self.__post_init__()

    def __post_init__(self) -> None:
        if 0 < self.temperature < _MAX_TEMP:
            self.temperature = _MAX_TEMP
        if self.seed == -1:
            self.seed = None
        if self.stop is None:
            self.stop = []
        elif isinstance(self.stop, str):
            self.stop = [self.stop]
        if self.stop_token_ids is None:
            self.stop_token_ids = []
        if self.bad_words is None:
            self.bad_words = []
        if self.stop and not self.include_stop_str_in_output:
            self.output_text_buffer_length = max(len(s) for s in self.stop) - 1
        self._verify_args()
        if self.temperature < _SAMPLING_EPS:  # greedy: the other knobs are reset
            self.top_p, self.top_k, self.min_p = 1.0, 0, 0.0
        self._all_stop_token_ids.update(self.stop_token_ids)
        if self.skip_reading_prefix_cache is None:
            self.skip_reading_prefix_cache = self.prompt_logprobs is not None

    def _verify_args(self) -> None:
        """vLLM 0.26's checks, with its exception types: VLLMValidationError for temperature, top_p, max_tokens and
        logprobs, plain ValueError for the rest."""
        def invalid(message: str, parameter: str, value: Any) -> None:
            raise VLLMValidationError(message, parameter=parameter, value=value)

        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}.")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                raise ValueError(f"{name} must be in [-2, 2], got {getattr(self, name)}.")
        if not math.isfinite(self.repetition_penalty) or self.repetition_penalty <= 0.0:
            raise ValueError(f"repetition_penalty must be greater than zero, got {self.repetition_penalty}.")
        if not math.isfinite(self.temperature):
            invalid(f"temperature must be a finite number, got {self.temperature}.", "temperature", self.temperature)
        if self.temperature < 0.0:
            invalid(f"temperature must be non-negative, got {self.temperature}.", "temperature", self.temperature)
        if self.temperature > 2.0:
            invalid(f"temperature must be in [0, 2], got {self.temperature}.", "temperature", self.temperature)
        if not 0.0 < self.top_p <= 1.0:
            invalid(f"top_p must be in (0, 1], got {self.top_p}.", "top_p", self.top_p)
        if self.top_k < -1:
            raise ValueError(f"top_k must be 0 (disable), or at least 1, got {self.top_k}.")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}.")
        if self.max_tokens is not None and self.max_tokens < 1:
            invalid(f"max_tokens must be at least 1, got {self.max_tokens}.", "max_tokens", self.max_tokens)
        if self.min_tokens < 0:
            raise ValueError(f"min_tokens must be greater than or equal to 0, got {self.min_tokens}.")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens must be less than or equal to max_tokens={self.max_tokens}, "
                             f"got {self.min_tokens}.")
        if self.logprobs is not None and self.logprobs != -1 and self.logprobs < 0:
            invalid(f"logprobs must be non-negative or -1, got {self.logprobs}.", "logprobs", self.logprobs)
        if any(not s for s in self.stop):
            raise ValueError("stop cannot contain an empty string.")
        if self.stop and not self.detokenize:
            raise ValueError("stop strings are only supported when detokenize is True. Set detokenize=True to use "
                             "stop.")

    def verify(self, model_config: Any, speculative_config: Any, structured_outputs_config: Any,
               tokenizer: Any) -> None:
        """The engine-side checks InputProcessor runs on every request (the double's subset)."""
        max_logprobs = model_config.max_logprobs
        if self.logprobs and self.logprobs > max_logprobs:
            raise VLLMValidationError(f"Requested sample logprobs of {self.logprobs}, which is greater than max "
                                      f"allowed: {max_logprobs}", parameter="logprobs", value=self.logprobs)
        vocab = model_config.get_vocab_size()
        bad = [t for t in self.logit_bias or {} if t < 0 or t >= vocab]
        if bad:
            raise VLLMValidationError(f"token_id(s) {bad} in logit_bias contain out-of-vocab token ids. Vocabulary "
                                      f"size: {vocab}", parameter="logit_bias", value=bad)
        if speculative_config is not None and (self.min_p > _SAMPLING_EPS or self.logit_bias):
            raise ValueError("The min_p and logit_bias sampling parameters are not yet supported with speculative "
                             "decoding.")
        guided = getattr(self, "structured_outputs", None) or getattr(self, "guided_decoding", None)  # _legacy too
        if structured_outputs_config is not None and guided is not None and tokenizer is None:
            raise ValueError("Structured outputs requires a tokenizer so it can't be used with 'skip_tokenizer_init'")

    def clone(self) -> SamplingParams:
        return copy.copy(self) if self.skip_clone else copy.deepcopy(self)

    def __repr__(self) -> str:
        public = (f for f in self.__struct_fields__ if not f.startswith("_"))
        return f"SamplingParams({', '.join(f'{f}={getattr(self, f)!r}' for f in public)})"
