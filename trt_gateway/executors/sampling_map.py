"""Gateway request -> an engine's `SamplingParams` keywords, the part the trtllm and vllm executors build alike.

TensorRT-LLM's LLM API took vLLM's `SamplingParams` names (temperature, top_p, ..., include_stop_str_in_output), so
one table maps the gateway's sampling, stopping and logprob fields for both engines. Each executor's params.py adds
what differs (guided decoding's parameter, the logprobs count, speculation) and refuses, with UNIMPLEMENTED naming the
gateway field, whatever its engine cannot do. A value equal to the engine's own default is None here and is left out,
so that the engine's default stays in charge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trt_gateway import errors
from trt_gateway.types import GenerateRequest, GuidedDecoding

# gateway field -> SamplingParams keyword, for the fields both engines name alike
SHARED_FIELDS = {
    "sampling.temperature": "temperature",
    "sampling.top_p": "top_p",
    "sampling.top_k": "top_k",
    "sampling.min_p": "min_p",
    "sampling.repetition_penalty": "repetition_penalty",
    "sampling.presence_penalty": "presence_penalty",
    "sampling.frequency_penalty": "frequency_penalty",
    "sampling.seed": "seed",
    "stopping.max_tokens": "max_tokens",
    "stopping.min_tokens": "min_tokens",
    "stopping.stop": "stop",
    "stopping.stop_token_ids": "stop_token_ids",
    "stopping.include_stop": "include_stop_str_in_output",
    "stopping.ignore_eos": "ignore_eos",
    "response.logprobs": "logprobs",
    "response.top_logprobs": "logprobs",
}
GUIDED_KINDS = ("json_schema", "regex", "grammar", "choice")


@dataclass(frozen=True)
class SamplingMap:
    """One engine's table (gateway field -> SamplingParams keyword) and how its executor words a refusal."""

    executor: str  # "trtllm", in "the trtllm executor does not support ..."
    engine: str  # "TensorRT-LLM", in "this TensorRT-LLM's SamplingParams has no ..."
    fields: Mapping[str, str]  # gateway field -> SamplingParams keyword; guided.* -> the guided parameter's keyword

    def refuse(self, field: str, what: str) -> errors.Unimplemented:
        return errors.Unimplemented(f"{field}: the {self.executor} executor does not support {what}", field=field)

    def supported(self, kw: Mapping[str, Any], present: frozenset[str], guided_kind: str | None) -> dict[str, Any]:
        """`kw` without its None values, every keyword in the installed SamplingParams (`present`); the first that
        is not is refused, naming the gateway field it came from."""
        out: dict[str, Any] = {}
        for key, value in kw.items():
            if value is None:
                continue
            if key not in present:
                field = self.source(key, guided_kind)
                raise self.refuse(field, f"{field} (this {self.engine}'s SamplingParams has no {key!r})")
            out[key] = value
        return out

    def source(self, key: str, guided_kind: str | None) -> str:
        """The gateway field a SamplingParams keyword came from. The guided parameter's keyword differs between
        engines and vLLM versions (the table may hold a placeholder for it), so any keyword the table does not name
        for a non-guided field is the guided one, from the kind asked for."""
        field = next((f for f, k in self.fields.items() if k == key and not f.startswith("guided.")), None)
        return field if field is not None else f"guided.{guided_kind}"


def shared_values(request: GenerateRequest) -> dict[str, Any]:
    """The keywords of SHARED_FIELDS (and logit_bias) from one request; None where the engine's default applies."""
    s, st = request.sampling, request.stopping
    return {
        "max_tokens": st.max_tokens,  # always explicit: the engines' defaults (vLLM 16, TensorRT-LLM 32) are not ours
        "temperature": 0.0 if s.greedy else s.temperature,  # our greedy rule, whatever the engine's epsilon
        "top_p": s.top_p if s.top_p != 1.0 else None,
        "top_k": s.top_k or None,  # unset: off (0 or -1, depending on the engine and version)
        "min_p": s.min_p or None,
        "repetition_penalty": s.repetition_penalty if s.repetition_penalty != 1.0 else None,
        "presence_penalty": s.presence_penalty or None,
        "frequency_penalty": s.frequency_penalty or None,
        "seed": s.seed,
        "logit_bias": dict(s.logit_bias) or None,
        "min_tokens": st.min_tokens or None,
        "stop": list(st.stop) or None,
        "stop_token_ids": list(st.stop_token_ids) or None,
        "include_stop_str_in_output": st.include_stop or None,
        "ignore_eos": st.ignore_eos or None,
    }


def check_top_logprobs(top_logprobs: int, limit: int) -> None:
    """The engine's logprobs limit (vLLM's max_logprobs, the trtllm option max_top_logprobs)."""
    if top_logprobs > limit:
        raise errors.InvalidArgument(
            f"response.top_logprobs must be <= {limit}, got {top_logprobs}", field="response.top_logprobs"
        )


def guided_params(guided: GuidedDecoding) -> dict[str, Any]:
    """Keywords of the engine's guided-decoding parameter class; both name json, regex and grammar alike (a choice
    list is vLLM's `choice`; the trtllm executor rewrites it, TensorRT-LLM having no such field)."""
    if guided.json_schema is not None:
        return {"json": guided.json_schema}
    if guided.regex is not None:
        return {"regex": guided.regex}
    if guided.grammar is not None:
        return {"grammar": guided.grammar}
    return {"choice": list(guided.choice)}
