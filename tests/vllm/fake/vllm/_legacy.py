"""Pieces of vLLM 0.10 the tests swap in to check feature detection (not importable from real vLLM under this name):
`GuidedDecodingParams` and a SamplingParams whose structured-output field is `guided_decoding`."""

from __future__ import annotations

from dataclasses import dataclass

from vllm.exceptions import VLLMValidationError
from vllm.sampling_params import SamplingParams


@dataclass
class GuidedDecodingParams:
    json: str | dict | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    backend: str | None = None
    whitespace_pattern: str | None = None
    structural_tag: str | None = None

    def __post_init__(self) -> None:
        count = sum(getattr(self, f) is not None for f in ("json", "regex", "choice", "grammar", "json_object",
                                                              "structural_tag"))
        if count > 1:
            raise VLLMValidationError("You can only use one kind of guided decoding")


class LegacySamplingParams(SamplingParams):
    __struct_fields__ = tuple("guided_decoding" if f == "structured_outputs" else f
                              for f in SamplingParams.__struct_fields__)
    _defaults = {("guided_decoding" if k == "structured_outputs" else k): v for k, v in SamplingParams._defaults.items()}
