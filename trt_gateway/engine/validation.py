"""Checks a request against the engine's limits before it is queued; each failure names the request field.

The server validates requests too; the engine re-checks what it depends on (vocabulary range, context window,
logprob counts) because it is also used directly, and a bad token id would otherwise fail inside a CUDA kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

from trt_gateway import errors
from trt_gateway.types import GenerateRequest


def validate_request(
    request: GenerateRequest,
    prompt_token_ids: Sequence[int],
    *,
    vocab_size: int,
    max_model_len: int,
    max_top_logprobs: int,
) -> None:
    n = len(prompt_token_ids)
    if n == 0:
        raise errors.InvalidArgument("the prompt is empty", field="prompt")
    if n >= max_model_len:
        raise errors.InvalidArgument(
            f"the prompt has {n} tokens but the context window is {max_model_len} tokens, "
            "including at least one output token",
            field="prompt",
        )
    bad = next((t for t in prompt_token_ids if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise errors.InvalidArgument(f"token id {bad} is outside the vocabulary [0, {vocab_size})", field="token_ids")

    s, stop, resp = request.sampling, request.stopping, request.response
    checks = [
        (s.temperature >= 0, "temperature", f"must be >= 0, got {s.temperature}"),
        (0 < s.top_p <= 1, "top_p", f"must be in (0, 1], got {s.top_p}"),
        (s.top_k >= 0, "top_k", f"must be >= 0 (0 = off), got {s.top_k}"),
        (0 <= s.min_p <= 1, "min_p", f"must be in [0, 1], got {s.min_p}"),
        (s.repetition_penalty > 0, "repetition_penalty", f"must be > 0, got {s.repetition_penalty}"),
        (stop.max_tokens >= 1, "max_tokens", f"must be >= 1, got {stop.max_tokens}"),
        (
            0 <= stop.min_tokens <= stop.max_tokens,
            "min_tokens",
            f"must be in [0, max_tokens={stop.max_tokens}], got {stop.min_tokens}",
        ),
        (
            0 <= resp.top_logprobs <= max_top_logprobs,
            "top_logprobs",
            f"must be in [0, {max_top_logprobs}], got {resp.top_logprobs}",
        ),
        (all(0 <= t < vocab_size for t in s.logit_bias), "logit_bias", f"token ids must be in [0, {vocab_size})"),
        (
            all(0 <= t < vocab_size for t in stop.stop_token_ids),
            "stop_token_ids",
            f"token ids must be in [0, {vocab_size})",
        ),
    ]
    for ok, field, message in checks:
        if not ok:
            raise errors.InvalidArgument(f"{field} {message}", field=field)
