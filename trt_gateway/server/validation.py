"""Request validation: every user-facing message in one table, every check naming the field and the limit.

Checks run on the protobuf message (where "unset" is still visible) before conversion, and against the model's
`Capabilities` so that asking for something the executor cannot do is UNIMPLEMENTED rather than silently ignored.
"""

from __future__ import annotations

import math
import re
from typing import Any

from trt_gateway import errors
from trt_gateway.config import ADAPTER_NAME_RE, LimitsConfig
from trt_gateway.types import ModelInfo
from trt_gateway.v1 import gateway_pb2 as pb

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]+$")
CHAT_ROLES = ("system", "user", "assistant", "tool")

MESSAGES = {
    "one_input": "exactly one of text, token_ids or messages must be set, got {got}",
    "range": "{field} must be in {range}, got {value}",
    "at_least": "{field} must be >= {limit}, got {value}",
    "at_most": "{field} must be <= {limit}, got {value}",
    "too_many": "{field} accepts at most {limit} entries, got {value}",
    "too_long": "{field} must be at most {limit} characters, got {value}",
    "empty": "{field} must not be empty",
    "pattern": "{field} must match {pattern}, got {value!r}",
    "one_of": "{field} must be one of {choices}, got {value!r}",
    "exclusive": "at most one of {fields} may be set",
    "finite": "{field} must be a finite number, got {value}",
    "token_range": "{field} holds token id {value}, outside the vocabulary [0, {limit})",
    "min_gt_max": "stopping.min_tokens ({value}) must be <= stopping.max_tokens ({limit})",
    "unknown_model": "model {value!r} is not served here; available: {available}",
    "unsupported": "{field}: executor {executor!r} does not support {what} for model {model!r}",
    "logprobs_limit": "response.top_logprobs must be <= {limit} for model {model!r}, got {value}",
    "draft_limit": "speculative.num_draft_tokens may only lower the server's draft length ({limit}), got {value}",
}


def fail(key: str, field: str, **kwargs: Any) -> errors.InvalidArgument:
    return errors.InvalidArgument(MESSAGES[key].format(field=field, **kwargs), field=field)


def unsupported(field: str, what: str, info: ModelInfo) -> errors.Unimplemented:
    message = MESSAGES["unsupported"].format(field=field, executor=info.executor, what=what, model=info.name)
    return errors.Unimplemented(message, field=field)


def request_id(value: str, limits: LimitsConfig) -> None:
    if len(value) > limits.max_request_id_length:
        raise fail("too_long", "request_id", limit=limits.max_request_id_length, value=len(value))
    if not REQUEST_ID_RE.fullmatch(value):  # fullmatch: "$" alone lets a trailing "\n" through
        raise fail("pattern", "request_id", pattern=REQUEST_ID_RE.pattern, value=value[:64])


def adapter_name(value: str, field: str = "adapter") -> None:
    if not ADAPTER_NAME_RE.fullmatch(value):
        raise fail("pattern", field, pattern=ADAPTER_NAME_RE.pattern, value=value[:80])


def _range(field: str, value: float, lo: float, hi: float, lo_open: bool = False) -> None:
    if not math.isfinite(value):
        raise fail("finite", field, value=value)
    if value < lo or value > hi or (lo_open and value == lo):
        raise fail("range", field, range=f"{'(' if lo_open else '['}{lo}, {hi}]", value=round(value, 6))


def prompt_input(
    text: str, token_ids: Any, messages: Any, limits: LimitsConfig, vocab_size: int, *, allow_token_ids: bool = True
) -> None:
    """Exactly one input, each within its limits."""
    given = [name for name, present in (("text", text), ("token_ids", token_ids), ("messages", messages)) if present]
    if len(given) != 1:
        raise fail("one_input", "text", got=", ".join(given) or "none")
    if text and len(text) > limits.max_prompt_chars:
        raise fail("too_long", "text", limit=limits.max_prompt_chars, value=len(text))
    if token_ids:
        if len(token_ids) > limits.max_prompt_tokens:
            raise fail("too_many", "token_ids", limit=limits.max_prompt_tokens, value=len(token_ids))
        bad = next((t for t in token_ids if t < 0 or t >= vocab_size), None)
        if bad is not None:
            raise fail("token_range", "token_ids", value=bad, limit=vocab_size)
    if messages:
        if len(messages) > limits.max_messages:
            raise fail("too_many", "messages", limit=limits.max_messages, value=len(messages))
        total = 0
        for i, m in enumerate(messages):
            if m.role not in CHAT_ROLES:
                raise fail("one_of", f"messages[{i}].role", choices=", ".join(CHAT_ROLES), value=m.role[:32])
            total += len(m.content)
        if total > limits.max_prompt_chars:
            raise fail("too_long", "messages", limit=limits.max_prompt_chars, value=total)


def generate(msg: pb.GenerateRequest, info: ModelInfo, limits: LimitsConfig) -> None:
    """Validate a GenerateRequest against the server limits and the model's capabilities."""
    caps = info.capabilities
    prompt_input(msg.text, msg.token_ids, msg.messages, limits, info.vocab_size)
    if msg.messages and not caps.chat_template:
        raise unsupported("messages", "chat messages (the model has no chat template)", info)
    if msg.n > limits.max_n:
        raise fail("at_most", "n", limit=limits.max_n, value=msg.n)
    if msg.adapter:
        adapter_name(msg.adapter)
        if not caps.lora:
            raise unsupported("adapter", "LoRA adapters", info)
    _sampling(msg.sampling, info, limits)
    _stopping(msg, info, limits)
    _response(msg.response, info, limits)
    _guided(msg.guided, info)
    spec = msg.speculative
    if spec.num_draft_tokens and caps.speculative and spec.num_draft_tokens > caps.num_draft_tokens:
        raise fail("draft_limit", "speculative.num_draft_tokens", limit=caps.num_draft_tokens, value=spec.num_draft_tokens)
    if not -1000 <= msg.priority <= 1000:
        raise fail("range", "priority", range="[-1000, 1000]", value=msg.priority)


def _sampling(s: pb.SamplingParams, info: ModelInfo, limits: LimitsConfig) -> None:
    caps = info.capabilities
    if s.HasField("temperature"):
        _range("sampling.temperature", s.temperature, 0.0, 100.0)
    if s.HasField("top_p"):
        _range("sampling.top_p", s.top_p, 0.0, 1.0, lo_open=True)
    if s.top_k < 0:
        raise fail("at_least", "sampling.top_k", limit=0, value=s.top_k)
    _range("sampling.min_p", s.min_p, 0.0, 1.0)
    if s.min_p and not caps.min_p:
        raise unsupported("sampling.min_p", "min_p sampling", info)
    if s.HasField("repetition_penalty"):
        _range("sampling.repetition_penalty", s.repetition_penalty, 0.0, 10.0, lo_open=True)
    _range("sampling.presence_penalty", s.presence_penalty, -2.0, 2.0)
    _range("sampling.frequency_penalty", s.frequency_penalty, -2.0, 2.0)
    penalised = s.presence_penalty or s.frequency_penalty or (s.HasField("repetition_penalty") and s.repetition_penalty != 1)
    if penalised and not caps.penalties:
        raise unsupported("sampling", "repetition/presence/frequency penalties", info)
    if s.HasField("seed") and not caps.seed:
        raise unsupported("sampling.seed", "seeded sampling", info)
    if s.logit_bias:
        if not caps.logit_bias:
            raise unsupported("sampling.logit_bias", "logit bias", info)
        if len(s.logit_bias) > limits.max_logit_bias:
            raise fail("too_many", "sampling.logit_bias", limit=limits.max_logit_bias, value=len(s.logit_bias))
        for token, bias in s.logit_bias.items():
            if not 0 <= token < info.vocab_size:
                raise fail("token_range", "sampling.logit_bias", value=token, limit=info.vocab_size)
            _range(f"sampling.logit_bias[{token}]", bias, -100.0, 100.0)


def _stopping(msg: pb.GenerateRequest, info: ModelInfo, limits: LimitsConfig) -> None:
    st = msg.stopping
    max_tokens = limits.default_max_tokens
    if st.HasField("max_tokens"):
        upper = min(limits.max_tokens, info.max_context_length)
        if not 1 <= st.max_tokens <= upper:
            raise fail("range", "stopping.max_tokens", range=f"[1, {upper}]", value=st.max_tokens)
        max_tokens = st.max_tokens
    if st.min_tokens > max_tokens:
        raise fail("min_gt_max", "stopping.min_tokens", value=st.min_tokens, limit=max_tokens)
    if len(st.stop) > limits.max_stop:
        raise fail("too_many", "stopping.stop", limit=limits.max_stop, value=len(st.stop))
    for i, s in enumerate(st.stop):
        if not s:
            raise fail("empty", f"stopping.stop[{i}]")
        if len(s) > limits.max_stop_length:
            raise fail("too_long", f"stopping.stop[{i}]", limit=limits.max_stop_length, value=len(s))
    if len(st.stop_token_ids) > limits.max_stop:
        raise fail("too_many", "stopping.stop_token_ids", limit=limits.max_stop, value=len(st.stop_token_ids))
    bad = next((t for t in st.stop_token_ids if not 0 <= t < info.vocab_size), None)
    if bad is not None:
        raise fail("token_range", "stopping.stop_token_ids", value=bad, limit=info.vocab_size)


def _response(r: pb.ResponseOptions, info: ModelInfo, limits: LimitsConfig) -> None:
    caps = info.capabilities
    if (r.logprobs or r.top_logprobs) and not caps.logprobs:
        raise unsupported("response.logprobs", "logprobs", info)
    limit = min(limits.max_top_logprobs, caps.max_top_logprobs)
    if r.top_logprobs > limit:
        raise errors.InvalidArgument(
            MESSAGES["logprobs_limit"].format(limit=limit, model=info.name, value=r.top_logprobs),
            field="response.top_logprobs",
        )
    if r.prompt_token_ids and not caps.prompt_token_ids:
        raise unsupported("response.prompt_token_ids", "returning prompt token ids", info)


def _guided(g: pb.GuidedDecoding, info: ModelInfo) -> None:
    kinds = [k for k in ("json_schema", "regex", "grammar", "choice") if getattr(g, k)]
    if len(kinds) > 1:
        raise fail("exclusive", "guided", fields="guided.json_schema, guided.regex, guided.grammar, guided.choice")
    if kinds and kinds[0] not in info.capabilities.guided:
        raise unsupported(f"guided.{kinds[0]}", f"guided decoding by {kinds[0]}", info)
