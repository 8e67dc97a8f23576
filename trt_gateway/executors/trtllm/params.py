"""Gateway request -> TensorRT-LLM `SamplingParams`, and TensorRT-LLM outputs -> gateway finish, usage, logprobs.

Every gateway field is either mapped here or refused with UNIMPLEMENTED naming the field (`errors.Unimplemented`,
`field=` the request field path). The table is in docs/trtllm.md; `FIELD_MAP` below is the same table as data.
A fresh SamplingParams is built per request because `generate_async` mutates the one it is given (reference §2.2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from trt_gateway import errors
from trt_gateway.types import FinishReason, GenerateRequest, TokenLogprob, TopLogprob

# gateway field -> SamplingParams field ("" where it is handled elsewhere; see docs/trtllm.md)
FIELD_MAP = {
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
    "guided.json_schema": "guided_decoding",
    "guided.regex": "guided_decoding",
    "guided.grammar": "guided_decoding",
    "guided.choice": "guided_decoding",
}
UNMAPPABLE = {
    "sampling.logit_bias": "logit bias (SamplingParams.embedding_bias is a dense vocabulary tensor whose PyTorch-backend "
                           "support is not established)",
}
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
    s, st, r, g, sp = request.sampling, request.stopping, request.response, request.guided, request.speculative
    if s.logit_bias:
        raise _refuse("sampling.logit_bias", UNMAPPABLE["sampling.logit_bias"])
    if m.spec_draft_tokens and not sp.enabled:
        raise _refuse("speculative.disable", "turning speculative decoding off per request (TensorRT-LLM speculates "
                      "for every request of an LLM built with a speculative config)")
    if m.spec_draft_tokens and sp.num_draft_tokens is not None and sp.num_draft_tokens < m.spec_draft_tokens:
        raise _refuse("speculative.num_draft_tokens", "a per-request draft length (TensorRT-LLM uses max_draft_len "
                      f"= {m.spec_draft_tokens} for every request)")
    kw: dict[str, Any] = {
        "max_tokens": st.max_tokens,  # always explicit: TensorRT-LLM's default is 32
        "temperature": s.temperature,
        "top_p": s.top_p if s.top_p != 1.0 else None,  # None: the C++ default (off)
        "top_k": s.top_k or None,
        "min_p": s.min_p or None,
        "repetition_penalty": s.repetition_penalty if s.repetition_penalty != 1.0 else None,
        "presence_penalty": s.presence_penalty or None,
        "frequency_penalty": s.frequency_penalty or None,
        "seed": s.seed,
        "min_tokens": st.min_tokens or None,
        "stop": list(st.stop) or None,
        "stop_token_ids": list(st.stop_token_ids) or None,
        "include_stop_str_in_output": st.include_stop or None,
        "ignore_eos": st.ignore_eos or None,
    }
    if r.logprobs or r.top_logprobs:
        if not m.logprobs:
            raise _refuse("response.logprobs", "logprobs (the TensorRT engine backend needs the "
                          "gather_generation_logits option)")
        if r.top_logprobs > m.max_top_logprobs:
            raise errors.InvalidArgument(
                f"response.top_logprobs must be <= {m.max_top_logprobs}, got {r.top_logprobs}", field="response.top_logprobs"
            )
        kw["logprobs"] = max(r.top_logprobs, 1)  # top-k per position; the sampled token's entry is looked up by id
    kind = g.kind
    if kind is not None:
        if not m.guided:
            raise _refuse(f"guided.{kind}", "guided decoding (set the guided_decoding_backend option)")
        kw["guided_decoding"] = guided_params(g.json_schema, g.regex, g.grammar, g.choice)
    if m.spec_draft_tokens:
        kw["return_perf_metrics"] = True  # per-request draft/accepted counts
    out: dict[str, Any] = {}
    for key, value in kw.items():
        if value is None:
            continue
        if key not in m.fields:
            if key == "return_perf_metrics":
                continue  # only feeds usage.draft_tokens/accepted_tokens; fine to go without
            gateway = f"guided.{kind}" if key == "guided_decoding" else next(f for f, t in FIELD_MAP.items() if t == key)
            raise _refuse(gateway, f"{gateway} (this TensorRT-LLM's SamplingParams has no {key!r})")
        out[key] = value
    return out


def guided_params(json_schema: str | None, regex: str | None, grammar: str | None, choice: Sequence[str]) -> dict:
    """GuidedDecodingParams keyword arguments; a choice list becomes a regex alternation of the literal strings."""
    if json_schema is not None:
        return {"json": json_schema}
    if regex is not None:
        return {"regex": regex}
    if grammar is not None:
        return {"grammar": grammar}
    return {"regex": "(" + "|".join("".join("\\" + c if c in _REGEX_SPECIAL else c for c in x) for x in choice) + ")"}


def _refuse(field: str, what: str) -> errors.Unimplemented:
    return errors.Unimplemented(f"{field}: the trtllm executor does not support {what}", field=field)


def finish_reason(completion: Any) -> tuple[FinishReason, str, int | None]:
    """(reason, matched stop string, matched stop token id) of a finished CompletionOutput."""
    reason, stop = completion.finish_reason, completion.stop_reason
    if reason == "length":
        return FinishReason.LENGTH, "", None
    if reason == "stop":
        if isinstance(stop, str):
            return FinishReason.STOP_STRING, stop, None
        return FinishReason.STOP_TOKEN, "", stop if isinstance(stop, int) else None  # None: EOS
    if reason in ("cancelled", "timeout"):  # "timeout": a TensorRT-LLM-side timeout, also not a normal end
        return FinishReason.CANCELLED, "", None
    raise errors.Internal(f"TensorRT-LLM finished a request with finish_reason {reason!r}")


def spec_counts(completion: Any) -> tuple[int, int]:
    """(draft tokens, accepted draft tokens) from request_perf_metrics, or (0, 0) where TensorRT-LLM gives none."""
    spec = getattr(getattr(completion, "request_perf_metrics", None), "speculative_decoding", None)
    draft = getattr(spec, "total_draft_tokens", 0)
    accepted = getattr(spec, "total_accepted_draft_tokens", 0)
    return (int(draft), int(accepted)) if isinstance(draft, int) and isinstance(accepted, int) else (0, 0)


def logprobs(
    entries: Sequence[Any], token_ids: Sequence[int], top_n: int, token_text: Callable[[int], str]
) -> tuple[TokenLogprob, ...]:
    """Convert new logprob entries, aligned with the tokens they belong to.

    An entry is a dict {token_id: Logprob(logprob, rank)} (top-k plus the sampled token) or a bare float (the
    TensorRT backend's List[float], sampled token only).
    """
    out = []
    for token, entry in zip(token_ids, entries, strict=False):
        if isinstance(entry, dict):
            own = entry.get(token)
            ranked = sorted(entry.items(), key=lambda kv: (_rank(kv[1]), -_value(kv[1])))[:top_n]
            top = tuple(TopLogprob(t, token_text(t), _value(lp)) for t, lp in ranked)
            out.append(TokenLogprob(token, token_text(token), _value(own) if own is not None else math.nan, top))
        else:
            out.append(TokenLogprob(token, token_text(token), float(entry)))
    return tuple(out)


def _value(lp: Any) -> float:
    return float(getattr(lp, "logprob", lp))


def _rank(lp: Any) -> int:
    rank = getattr(lp, "rank", None)
    return rank if isinstance(rank, int) else 1 << 30
