"""Gateway request -> vLLM `SamplingParams` keywords, and vLLM outputs -> gateway finish and logprobs.

Every gateway field is either mapped here or refused with UNIMPLEMENTED naming the field (`errors.Unimplemented`,
`field=` the request field path). The table is in docs/vllm.md; `FIELD_MAP` below is the same table as data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from trt_gateway import errors
from trt_gateway.types import FinishReason, GenerateRequest, TokenLogprob, TopLogprob

GUIDED = "guided"  # FIELD_MAP's target for guided.*: the structured-output field of the installed vLLM

# gateway field -> SamplingParams field
FIELD_MAP = {
    "sampling.temperature": "temperature",
    "sampling.top_p": "top_p",
    "sampling.top_k": "top_k",
    "sampling.min_p": "min_p",
    "sampling.repetition_penalty": "repetition_penalty",
    "sampling.presence_penalty": "presence_penalty",
    "sampling.frequency_penalty": "frequency_penalty",
    "sampling.seed": "seed",
    "sampling.logit_bias": "logit_bias",
    "stopping.max_tokens": "max_tokens",
    "stopping.min_tokens": "min_tokens",
    "stopping.stop": "stop",
    "stopping.stop_token_ids": "stop_token_ids",
    "stopping.include_stop": "include_stop_str_in_output",
    "stopping.ignore_eos": "ignore_eos",
    "response.logprobs": "logprobs",
    "response.top_logprobs": "logprobs",
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
        raise _refuse("speculative.disable", "turning speculative decoding off per request", CONDITIONAL)
    if m.speculative and sp.num_draft_tokens is not None and sp.num_draft_tokens != m.spec_draft_tokens:
        raise _refuse("speculative.num_draft_tokens", "a per-request draft length", CONDITIONAL)
    if m.speculative and s.min_p:
        raise _refuse("sampling.min_p", "min_p on an engine with speculative decoding", CONDITIONAL)
    if m.speculative and s.logit_bias:
        raise _refuse("sampling.logit_bias", "logit_bias on an engine with speculative decoding", CONDITIONAL)
    if st.stop and not m.tokenizer:
        raise _refuse("stopping.stop", "stop strings without a tokenizer (the engine runs with skip_tokenizer_init)")
    kw: dict[str, Any] = {
        "max_tokens": st.max_tokens,  # always explicit: vLLM's default is 16
        "temperature": s.temperature,
        "top_p": s.top_p if s.top_p != 1.0 else None,
        "top_k": s.top_k or None,  # unset: off (0 in new versions, -1 in old ones)
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
    if r.logprobs or r.top_logprobs:
        if r.top_logprobs > m.max_top_logprobs:
            raise errors.InvalidArgument(
                f"response.top_logprobs must be <= {m.max_top_logprobs}, got {r.top_logprobs}",
                field="response.top_logprobs",
            )
        kw["logprobs"] = r.top_logprobs  # vLLM returns this many alternatives plus the sampled token (0: just it)
    kind = g.kind
    if kind is not None:
        if not m.tokenizer:
            raise _refuse(f"guided.{kind}", "guided decoding without a tokenizer (skip_tokenizer_init)")
        if m.guided_field is None:
            raise _refuse(f"guided.{kind}", "guided decoding (guided_decoding_backend is null, or this vLLM has "
                          "no structured-output parameters)")
        kw[GUIDED] = guided_params(g.json_schema, g.regex, g.grammar, g.choice)
    out: dict[str, Any] = {}
    for key, value in kw.items():
        if value is None:
            continue
        name = m.guided_field if key == GUIDED else key
        if name not in m.fields:
            gateway = f"guided.{kind}" if key == GUIDED else next(f for f, t in FIELD_MAP.items() if t == key)
            raise _refuse(gateway, f"{gateway} (this vLLM's SamplingParams has no {name!r})")
        out[name] = value
    if not m.tokenizer:
        out["detokenize"] = False
    return out


def guided_params(json_schema: str | None, regex: str | None, grammar: str | None, choice: Sequence[str]) -> dict:
    """StructuredOutputsParams / GuidedDecodingParams keywords: both classes name the four fields alike."""
    if json_schema is not None:
        return {"json": json_schema}
    if regex is not None:
        return {"regex": regex}
    if grammar is not None:
        return {"grammar": grammar}
    return {"choice": list(choice)}


def _refuse(field: str, what: str, why: dict[str, str] | None = None) -> errors.Unimplemented:
    reason = f" ({why[field]})" if why and field in why else ""
    return errors.Unimplemented(f"{field}: the vllm executor does not support {what}{reason}", field=field)


def finish_reason(completion: Any, last_token: int | None) -> tuple[FinishReason, str, int | None]:
    """(reason, matched stop string, matched stop token id) of a finished CompletionOutput.

    vLLM's strings: "stop" (stop_reason = the stop string, the stop token id, or None for EOS), "length", "abort";
    newer versions add "error" (a retryable request-level failure) and "repetition" (never asked for here).
    """
    reason, stop = completion.finish_reason, completion.stop_reason
    if reason == "length":
        return FinishReason.LENGTH, "", None
    if reason == "stop":
        if isinstance(stop, str):
            return FinishReason.STOP_STRING, stop, None
        return FinishReason.STOP_TOKEN, "", stop if isinstance(stop, int) else last_token  # None: EOS, the last token
    if reason == "abort":
        return FinishReason.CANCELLED, "", None
    if reason == "error":
        raise errors.Unavailable("vLLM failed this request with a retryable internal error (finish_reason 'error', "
                                 "e.g. a KV-cache transfer failure); send it again")
    raise errors.Internal(f"vLLM finished a request with finish_reason {reason!r}")


def logprobs(
    entries: Sequence[Any], token_ids: Sequence[int], top_n: int, token_text: Callable[[int], str]
) -> tuple[TokenLogprob, ...]:
    """One entry per token: a dict {token_id: Logprob(logprob, rank, decoded_token)} holding the top `top_n` and the
    sampled token (vLLM's SampleLogprobs in a DELTA output are the new tokens' only)."""
    out = []
    for token, entry in zip(token_ids, entries, strict=False):
        own = entry.get(token)
        ranked = sorted(entry.items(), key=lambda kv: _rank(kv[1]))[:top_n]
        top = tuple(TopLogprob(t, _text(lp, t, token_text), float(lp.logprob)) for t, lp in ranked)
        value = float(own.logprob) if own is not None else math.nan
        out.append(TokenLogprob(token, _text(own, token, token_text), value, top))
    return tuple(out)


def _text(lp: Any, token: int, token_text: Callable[[int], str]) -> str:
    decoded = getattr(lp, "decoded_token", None)
    return decoded if isinstance(decoded, str) else token_text(token)


def _rank(lp: Any) -> int:
    rank = getattr(lp, "rank", None)
    return rank if isinstance(rank, int) else 1 << 30
