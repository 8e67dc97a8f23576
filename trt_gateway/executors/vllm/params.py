"""Gateway request -> vLLM `SamplingParams` keywords, and vLLM's finish reasons -> gateway finish.

Every gateway field is either mapped here or refused with UNIMPLEMENTED naming the field (`errors.Unimplemented`,
`field=` the request field path). The table is in docs/vllm.md; `FIELD_MAP` below is the same table as data, the
fields both engines name alike coming from executors/sampling_map.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trt_gateway import errors
from trt_gateway.executors import request_output, sampling_map
from trt_gateway.executors.sampling_map import SHARED_FIELDS, SamplingMap
from trt_gateway.types import FinishReason, GenerateRequest

GUIDED = "guided"  # FIELD_MAP's target for guided.*: the structured-output field of the installed vLLM

# gateway field -> SamplingParams field
FIELD_MAP = {
    **SHARED_FIELDS,
    "sampling.logit_bias": "logit_bias",
    "guided.json_schema": GUIDED,
    "guided.regex": GUIDED,
    "guided.grammar": GUIDED,
    "guided.choice": GUIDED,
}
# Refused in some configurations only (see sampling_kwargs); vLLM maps every other field.
CONDITIONAL = {
    "speculative.disable": "vLLM speculates for every request of an engine built with a speculative_config",
    "speculative.num_draft_tokens": "vLLM uses num_speculative_tokens for every request",
    # vLLM 0.26 SamplingParams._validate_spec_decode: "The min_p and logit_bias sampling parameters are not yet
    # supported with speculative decoding."
    "sampling.min_p": "vLLM does not support min_p with speculative decoding",
    "sampling.logit_bias": "vLLM does not support logit_bias with speculative decoding",
}
MAP = SamplingMap("vllm", "vLLM", FIELD_MAP)


@dataclass(frozen=True)
class ParamSupport:
    """What the engine was built with, which decides what a request may ask for."""

    fields: frozenset[str]  # SamplingParams fields of the installed vLLM
    guided_field: str | None  # "structured_outputs" / "guided_decoding"; None: guided decoding off or absent
    max_top_logprobs: int
    speculative: bool
    spec_draft_tokens: int  # 0: taken from the draft checkpoint, unknown to the gateway
    tokenizer: bool  # False with skip_tokenizer_init: token ids only


def sampling_kwargs(request: GenerateRequest, m: ParamSupport) -> dict[str, Any]:
    """SamplingParams keyword arguments for one request (guided params as a plain dict under m.guided_field)."""
    s, st, r, g, sp = request.sampling, request.stopping, request.response, request.guided, request.speculative
    if m.speculative and not sp.enabled:
        raise _conditional("speculative.disable", "turning speculative decoding off per request")
    if m.speculative and sp.num_draft_tokens is not None and sp.num_draft_tokens != m.spec_draft_tokens:
        raise _conditional("speculative.num_draft_tokens", "a per-request draft length")
    if m.speculative and s.min_p:
        raise _conditional("sampling.min_p", "min_p on an engine with speculative decoding")
    if m.speculative and s.logit_bias:
        raise _conditional("sampling.logit_bias", "logit_bias on an engine with speculative decoding")
    if st.stop and not m.tokenizer:
        raise MAP.refuse("stopping.stop", "stop strings without a tokenizer (the engine runs with skip_tokenizer_init)")
    kw = sampling_map.shared_values(request)
    if r.logprobs or r.top_logprobs:
        sampling_map.check_top_logprobs(r.top_logprobs, m.max_top_logprobs)
        kw["logprobs"] = r.top_logprobs  # vLLM returns this many alternatives plus the sampled token (0: just it)
    kind = g.kind
    if kind is not None:
        if not m.tokenizer:
            raise MAP.refuse(f"guided.{kind}", "guided decoding without a tokenizer (skip_tokenizer_init)")
        if m.guided_field is None:
            raise MAP.refuse(f"guided.{kind}", "guided decoding (guided_decoding_backend is null, or this vLLM has "
                             "no structured-output parameters)")
        # StructuredOutputsParams and GuidedDecodingParams name the four fields alike; load_api chose the one whose
        # SamplingParams field (m.guided_field) exists
        kw[m.guided_field] = sampling_map.guided_params(g)
    out = MAP.supported(kw, m.fields, kind)
    if not m.tokenizer:
        out["detokenize"] = False
    return out


def _conditional(field: str, what: str) -> errors.Unimplemented:
    return MAP.refuse(field, f"{what} ({CONDITIONAL[field]})")


def finish_reason(completion: Any, last_token: int | None) -> tuple[FinishReason, str, int | None]:
    """(reason, matched stop string, matched stop token id) of a finished CompletionOutput.

    vLLM's strings: "stop" (stop_reason = the stop string, the stop token id, or None for EOS), "length", "abort";
    newer versions add "error" (a retryable request-level failure) and "repetition" (never asked for here).
    """
    finish = request_output.finish_reason(completion, last_token)  # EOS: the last token is the EOS id
    if finish is not None:
        return finish
    reason = completion.finish_reason
    if reason == "abort":
        return FinishReason.CANCELLED, "", None
    if reason == "error":
        raise errors.Unavailable("vLLM failed this request with a retryable internal error (finish_reason 'error', "
                                 "e.g. a KV-cache transfer failure); send it again")
    raise errors.Internal(f"vLLM finished a request with finish_reason {reason!r}")
