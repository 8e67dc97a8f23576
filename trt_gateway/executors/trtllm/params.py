"""Gateway request -> TensorRT-LLM `SamplingParams`, and TensorRT-LLM outputs -> gateway finish and spec counts.

Every gateway field is either mapped here or refused with UNIMPLEMENTED naming the field (`errors.Unimplemented`,
`field=` the request field path). The table is in docs/trtllm.md; `FIELD_MAP` below is the same table as data, the
fields both engines name alike coming from executors/sampling_map.py. A fresh SamplingParams is built per request
because `generate_async` mutates the one it is given (reference §2.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trt_gateway import errors
from trt_gateway.executors import request_output, sampling_map
from trt_gateway.executors.sampling_map import SHARED_FIELDS, SamplingMap
from trt_gateway.types import FinishReason, GenerateRequest, GuidedDecoding

# gateway field -> SamplingParams field ("" where it is handled elsewhere; see docs/trtllm.md)
FIELD_MAP = {
    **SHARED_FIELDS,
    "guided.json_schema": "guided_decoding",
    "guided.regex": "guided_decoding",
    "guided.grammar": "guided_decoding",
    "guided.choice": "guided_decoding",
}
UNMAPPABLE = {
    "sampling.logit_bias": "logit bias (SamplingParams.embedding_bias is a dense vocabulary tensor whose PyTorch-backend "
                           "support is not established)",
}
MAP = SamplingMap("trtllm", "TensorRT-LLM", FIELD_MAP)
_REGEX_SPECIAL = set("\\.^$*+?{}[]|()")


@dataclass(frozen=True)
class ParamSupport:
    """What the LLM was built with, which decides what a request may ask for."""

    fields: frozenset[str]  # SamplingParams constructor fields of the installed TensorRT-LLM
    guided: bool  # a guided_decoding_backend is configured
    logprobs: bool  # logprobs can be returned (always on PyTorch; TRT needs gather_generation_logits)
    max_top_logprobs: int
    spec_draft_tokens: int  # 0: no speculative decoding


def sampling_kwargs(request: GenerateRequest, m: ParamSupport) -> dict[str, Any]:
    """SamplingParams keyword arguments for one request, or Unimplemented naming the first unmappable field."""
    s, r, g, sp = request.sampling, request.response, request.guided, request.speculative
    if s.logit_bias:
        raise MAP.refuse("sampling.logit_bias", UNMAPPABLE["sampling.logit_bias"])
    if m.spec_draft_tokens and not sp.enabled:
        raise MAP.refuse("speculative.disable", "turning speculative decoding off per request (TensorRT-LLM "
                         "speculates for every request of an LLM built with a speculative config)")
    if m.spec_draft_tokens and sp.num_draft_tokens is not None and sp.num_draft_tokens < m.spec_draft_tokens:
        raise MAP.refuse("speculative.num_draft_tokens", "a per-request draft length (TensorRT-LLM uses max_draft_len "
                         f"= {m.spec_draft_tokens} for every request)")
    kw = sampling_map.shared_values(request)
    if r.logprobs or r.top_logprobs:
        if not m.logprobs:
            raise MAP.refuse("response.logprobs", "logprobs (the TensorRT engine backend needs the "
                             "gather_generation_logits option)")
        sampling_map.check_top_logprobs(r.top_logprobs, m.max_top_logprobs)
        kw["logprobs"] = max(r.top_logprobs, 1)  # top-k per position; the sampled token's entry is looked up by id
    kind = g.kind
    if kind is not None:
        if not m.guided:
            raise MAP.refuse(f"guided.{kind}", "guided decoding (set the guided_decoding_backend option)")
        kw["guided_decoding"] = guided_params(g)
    if m.spec_draft_tokens and "return_perf_metrics" in m.fields:
        kw["return_perf_metrics"] = True  # per-request draft/accepted counts; without it usage just lacks them
    return MAP.supported(kw, m.fields, kind)


def guided_params(guided: GuidedDecoding) -> dict[str, Any]:
    """GuidedDecodingParams keyword arguments; it has no choice field, so a choice list becomes a regex alternation of
    the literal strings."""
    kw = sampling_map.guided_params(guided)
    if "choice" in kw:
        return {"regex": "(" + "|".join(_literal(c) for c in kw["choice"]) + ")"}
    return kw


def _literal(text: str) -> str:
    return "".join("\\" + c if c in _REGEX_SPECIAL else c for c in text)


def finish_reason(completion: Any) -> tuple[FinishReason, str, int | None]:
    """(reason, matched stop string, matched stop token id) of a finished CompletionOutput."""
    finish = request_output.finish_reason(completion, None)  # a stop token id of None: EOS
    if finish is not None:
        return finish
    if completion.finish_reason in ("cancelled", "timeout"):  # "timeout": TensorRT-LLM's own, not a normal end either
        return FinishReason.CANCELLED, "", None
    raise errors.Internal(f"TensorRT-LLM finished a request with finish_reason {completion.finish_reason!r}")


def spec_counts(completion: Any) -> tuple[int, int]:
    """(draft tokens, accepted draft tokens) from request_perf_metrics, or (0, 0) where TensorRT-LLM gives none."""
    spec = getattr(getattr(completion, "request_perf_metrics", None), "speculative_decoding", None)
    draft = getattr(spec, "total_draft_tokens", 0)
    accepted = getattr(spec, "total_accepted_draft_tokens", 0)
    return (int(draft), int(accepted)) if isinstance(draft, int) and isinstance(accepted, int) else (0, 0)
