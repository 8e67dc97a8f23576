"""What a finished or streaming engine output says, read alike for TensorRT-LLM and vLLM: the finish of a
`CompletionOutput`, its logprob entries, and the prompt its `RequestOutput` carries (TensorRT-LLM's LLM API took these
shapes from vLLM). Each executor's stream.py adds its engine's own finish reasons, usage and error kinds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from trt_gateway.types import FinishReason, PromptInfo, TokenLogprob, TopLogprob


def finish_reason(completion: Any, last_token: int | None) -> tuple[FinishReason, str, int | None] | None:
    """(reason, matched stop string, matched stop token id) for "length" and "stop"; None for any other reason.

    On "stop", `stop_reason` is the stop string, the stop token id, or None for EOS, whose id is then `last_token`
    (None where the caller does not track it).
    """
    reason, stop = completion.finish_reason, completion.stop_reason
    if reason == "length":
        return FinishReason.LENGTH, "", None
    if reason == "stop":
        if isinstance(stop, str):
            return FinishReason.STOP_STRING, stop, None
        return FinishReason.STOP_TOKEN, "", stop if isinstance(stop, int) else last_token
    return None


def logprobs(
    entries: Sequence[Any], token_ids: Sequence[int], top_n: int, token_text: Callable[[int], str]
) -> tuple[TokenLogprob, ...]:
    """Convert new logprob entries, aligned with the tokens they belong to.

    An entry is a dict {token_id: Logprob} holding the top `top_n` and the sampled token (a Logprob has `logprob`,
    `rank` and, from vLLM, `decoded_token`), or a bare float (TensorRT-LLM's TensorRT backend: the sampled token only).
    """
    out = []
    for token, entry in zip(token_ids, entries, strict=False):
        if not isinstance(entry, dict):
            out.append(TokenLogprob(token, token_text(token), float(entry)))
            continue
        own = entry.get(token)
        ranked = sorted(entry.items(), key=lambda kv: (_rank(kv[1]), -_value(kv[1])))[:top_n]
        top = tuple(TopLogprob(t, _text(lp, t, token_text), _value(lp)) for t, lp in ranked)
        value = _value(own) if own is not None else math.nan
        out.append(TokenLogprob(token, _text(own, token, token_text), value, top))
    return tuple(out)


def prompt_info(out: Any, want_ids: bool, want_text: bool, decode: Callable[[list[int]], str]) -> PromptInfo:
    """The prompt of a RequestOutput: its length always, its ids and text when asked (text decoded from the ids where
    the prompt was given as ids)."""
    ids = tuple(out.prompt_token_ids or ())
    text = (out.prompt if isinstance(out.prompt, str) else decode(list(ids))) if want_text else ""
    return PromptInfo(num_tokens=len(ids), token_ids=ids if want_ids else (), text=text)


def _text(lp: Any, token: int, token_text: Callable[[int], str]) -> str:
    decoded = getattr(lp, "decoded_token", None)
    return decoded if isinstance(decoded, str) else token_text(token)


def _value(lp: Any) -> float:
    return float(getattr(lp, "logprob", lp))


def _rank(lp: Any) -> int:
    rank = getattr(lp, "rank", None)
    return rank if isinstance(rank, int) else 1 << 30
