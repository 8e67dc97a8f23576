"""`vllm.sampling_params`: SamplingParams (a msgspec Struct in vLLM: `__struct_fields__`, keyword construction,
validation in __post_init__ raising VLLMValidationError), RequestOutputKind, StructuredOutputsParams."""

from __future__ import annotations

import copy
import enum
from dataclasses import dataclass
from typing import Any

from vllm.exceptions import VLLMValidationError

_SAMPLING_EPS = 1e-5


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

    def __post_init__(self) -> None:
        count = sum(getattr(self, f) is not None for f in ("json", "regex", "choice", "grammar", "json_object",
                                                              "structural_tag"))
        if count != 1:
            raise VLLMValidationError(f"You must use exactly one kind of structured outputs constraint, got {count}")


class SamplingParams:
    __struct_fields__: tuple[str, ...] = (
        "n", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature", "top_p", "top_k", "min_p",
        "seed", "stop", "stop_token_ids", "ignore_eos", "max_tokens", "min_tokens", "logprobs", "prompt_logprobs",
        "detokenize", "skip_special_tokens", "spaces_between_special_tokens", "include_stop_str_in_output",
        "output_kind", "output_text_buffer_length", "_all_stop_token_ids", "structured_outputs", "logit_bias",
        "allowed_token_ids", "extra_args", "bad_words", "_bad_words_token_ids",
    )
    _defaults: dict[str, Any] = {
        "n": 1, "presence_penalty": 0.0, "frequency_penalty": 0.0, "repetition_penalty": 1.0, "temperature": 1.0,
        "top_p": 1.0, "top_k": 0, "min_p": 0.0, "seed": None, "stop": None, "stop_token_ids": None,
        "ignore_eos": False, "max_tokens": 16, "min_tokens": 0, "logprobs": None, "prompt_logprobs": None,
        "detokenize": True, "skip_special_tokens": True, "spaces_between_special_tokens": True,
        "include_stop_str_in_output": False, "output_kind": RequestOutputKind.CUMULATIVE,
        "output_text_buffer_length": 0, "_all_stop_token_ids": None, "structured_outputs": None, "logit_bias": None,
        "allowed_token_ids": None, "extra_args": None, "bad_words": None, "_bad_words_token_ids": None,
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
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop or [])
        self.stop_token_ids = list(self.stop_token_ids or [])
        if self.stop and not self.include_stop_str_in_output:
            self.output_text_buffer_length = max(len(s) for s in self.stop) - 1
        self._verify_args()
        if self.temperature < _SAMPLING_EPS:  # greedy: the other knobs are reset
            self.top_p, self.top_k, self.min_p = 1.0, 0, 0.0
        self._all_stop_token_ids = set(self.stop_token_ids)

    def _verify_args(self) -> None:
        def fail(message: str, parameter: str, value: Any) -> None:
            raise VLLMValidationError(message, parameter=parameter, value=value)

        if self.n < 1:
            fail(f"n must be at least 1, got {self.n}.", "n", self.n)
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                fail(f"{name} must be in [-2, 2], got {getattr(self, name)}.", name, getattr(self, name))
        if self.repetition_penalty <= 0.0:
            fail(f"repetition_penalty must be greater than zero, got {self.repetition_penalty}.",
                 "repetition_penalty", self.repetition_penalty)
        if self.temperature < 0.0:
            fail(f"temperature must be non-negative, got {self.temperature}.", "temperature", self.temperature)
        if not 0.0 < self.top_p <= 1.0:
            fail(f"top_p must be in (0, 1], got {self.top_p}.", "top_p", self.top_p)
        if self.top_k < -1:
            fail(f"top_k must be 0 or -1 (disable), or at least 1, got {self.top_k}.", "top_k", self.top_k)
        if not 0.0 <= self.min_p <= 1.0:
            fail(f"min_p must be in [0, 1], got {self.min_p}.", "min_p", self.min_p)
        if self.max_tokens is not None and self.max_tokens < 1:
            fail(f"max_tokens must be at least 1, got {self.max_tokens}.", "max_tokens", self.max_tokens)
        if self.min_tokens < 0 or (self.max_tokens is not None and self.min_tokens > self.max_tokens):
            fail(f"min_tokens must be in [0, max_tokens], got {self.min_tokens}.", "min_tokens", self.min_tokens)
        if self.logprobs is not None and self.logprobs != -1 and self.logprobs < 0:
            fail(f"logprobs must be non-negative or -1, got {self.logprobs}.", "logprobs", self.logprobs)
        if any(not s for s in self.stop):
            fail("stop cannot contain an empty string.", "stop", self.stop)
        if self.stop and not self.detokenize:
            fail("stop strings are only supported when detokenize is True. Set detokenize=True to use stop.",
                 "detokenize", self.detokenize)

    def clone(self) -> SamplingParams:
        return copy.deepcopy(self)

    def __repr__(self) -> str:
        public = (f for f in self.__struct_fields__ if not f.startswith("_"))
        return f"SamplingParams({', '.join(f'{f}={getattr(self, f)!r}' for f in public)})"
