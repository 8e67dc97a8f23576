"""The one request check: every rule a `GenerateRequest` must satisfy, and every user-facing message, in one place.

Field names are dotted paths into `types.GenerateRequest` (`sampling.temperature`, `stopping.stop[2]`), which are
also the paths in the protobuf message, so a gRPC client reads the name of the field it set. Three callers share
the same rules and messages:

- the gRPC servicer (and any other frontend) calls `check_request` after converting its wire format, against the
  server limits and the model's `Capabilities`: asking for something the executor cannot do is UNIMPLEMENTED
  rather than silently ignored;
- the embedded engine calls `check_tokens` once the prompt is tokenized, against its own context window and
  vocabulary, so a bad id never reaches a kernel even when the engine is used without the server;
- both run `check_values`: whether a temperature is valid does not depend on who asks.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from trt_gateway import errors
from trt_gateway.config import ADAPTER_NAME_RE, LimitsConfig
from trt_gateway.errors import quote
from trt_gateway.types import GenerateRequest, GuidedDecoding, Prompt, ServedModel

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]+$")
TOOL_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
TOOL_CHOICES = ("", "auto", "none", "required")  # or a tool's name
CHAT_ROLES = ("system", "user", "assistant", "tool")
GUIDED_FIELDS = ("json_schema", "regex", "grammar", "choice")

MESSAGES = {
    "one_input": "exactly one of text, token_ids or messages must be set, got {got}",
    "range": "{field} must be in {range}, got {value}",
    "at_least": "{field} must be >= {limit}, got {value}",
    "at_most": "{field} must be <= {limit}, got {value}",
    "too_many": "{field} accepts at most {limit} entries, got {value}",
    "too_long": "{field} must be at most {limit} characters, got {value}",
    "empty": "{field} must not be empty",
    "pattern": "{field} must match {pattern}, got {value}",
    "one_of": "{field} must be one of {choices}, got {value}",
    "over_limit": "{field} must be at most {limit} {unit} (limits.{name}), got {value}",
    "context_chars": "{field} has {value} characters, more than a context window of {window} tokens can hold at "
    "{per} characters a token ({source}): at most {limit}",
    "exclusive": "at most one of {fields} may be set",
    "finite": "{field} must be a finite number, got {value}",
    "token_range": "{field} holds token id {value}, outside the vocabulary [0, {limit})",
    "min_gt_max": "stopping.min_tokens ({value}) must be <= stopping.max_tokens ({limit})",
    "empty_prompt": "the prompt is empty",
    "context": "the prompt has {value} tokens but the context window is {limit} tokens, including at least one "
    "output token",
    "unknown_model": "model {value} is not served here; available: {available}",
    "duplicate_id": "request_id {value} is already running",
    "unsupported": "{field}: executor {executor!r} does not support {what} for model {model!r}",
    "logprobs_limit": "response.top_logprobs must be <= {limit} for model {model!r}, got {value}",
    "draft_limit": "speculative.num_draft_tokens may only lower the server's draft length ({limit}), got {value}",
    "json_object": "{field} must be a JSON object, got {value}",
    "duplicate": "{field} repeats {value}",
    "tools_need_chat": "tools need a chat prompt (messages)",
    "tool_choice": "tool_choice must be auto, none, required or the name of one of the tools, got {value}",
}


def fail(key: str, field: str, **kwargs: Any) -> errors.InvalidArgument:
    return errors.InvalidArgument(MESSAGES[key].format(field=field, **kwargs), field=field)


def unsupported(field: str, what: str, info: ServedModel) -> errors.Unimplemented:
    message = MESSAGES["unsupported"].format(field=field, executor=info.executor, what=what, model=info.name)
    return errors.Unimplemented(message, field=field)


def unknown_model(name: str, available: Sequence[str]) -> errors.NotFound:
    return errors.NotFound(MESSAGES["unknown_model"].format(value=quote(name), available=", ".join(available)), field="model")


def over_limit(field: str, value: int, limits: LimitsConfig, name: str, unit: str = "characters") -> None:
    """`value` (a length or a count) must be within `limits.<name>`; the message names that setting."""
    limit = getattr(limits, name)
    if value > limit:
        raise fail("over_limit", field, limit=limit, unit=unit, name=name, value=value)


def model_name(name: str, limits: LimitsConfig) -> None:
    """Checked before any lookup, so a huge name is never echoed or compared."""
    over_limit("model", len(name), limits, "max_model_name_length")


def duplicate_request_id(request_id: str) -> errors.AlreadyExists:
    """Ids are unique among running requests: every layer that keys state by id refuses a second one this way."""
    return errors.AlreadyExists(MESSAGES["duplicate_id"].format(value=quote(request_id)), field="request_id")


# -- value ranges: the same for every caller -------------------------------------------------------------------------


def in_range(field: str, value: float, lo: float | None, hi: float | None, lo_open: bool = False) -> None:
    """`value` must be finite and in [lo, hi] ((lo, hi] when lo_open); None is an open end."""
    if not math.isfinite(value):
        raise fail("finite", field, value=value)
    below = lo is not None and (value < lo or (lo_open and value == lo))
    if hi is None and below:
        raise fail("at_least", field, limit=lo, value=value)
    if below or (hi is not None and value > hi):
        raise fail("range", field, range=f"{'(' if lo_open else '['}{lo}, {hi}]", value=round(value, 6))


@dataclass(frozen=True, slots=True)
class Range:
    """One row of the range table: where the value sits in the request, and its bounds."""

    field: str
    get: Callable[[GenerateRequest], float]
    lo: float | None
    hi: float | None
    lo_open: bool = False

    def check(self, request: GenerateRequest) -> None:
        in_range(self.field, self.get(request), self.lo, self.hi, self.lo_open)


RANGES = (
    Range("sampling.temperature", lambda r: r.sampling.temperature, 0.0, 100.0),
    Range("sampling.top_p", lambda r: r.sampling.top_p, 0.0, 1.0, lo_open=True),
    Range("sampling.top_k", lambda r: r.sampling.top_k, 0, None),
    Range("sampling.min_p", lambda r: r.sampling.min_p, 0.0, 1.0),
    Range("sampling.repetition_penalty", lambda r: r.sampling.repetition_penalty, 0.0, 10.0, lo_open=True),
    Range("sampling.presence_penalty", lambda r: r.sampling.presence_penalty, -2.0, 2.0),
    Range("sampling.frequency_penalty", lambda r: r.sampling.frequency_penalty, -2.0, 2.0),
    Range("stopping.max_tokens", lambda r: r.stopping.max_tokens, 1, None),
    Range("stopping.min_tokens", lambda r: r.stopping.min_tokens, 0, None),
    Range("response.top_logprobs", lambda r: r.response.top_logprobs, 0, None),
    Range("priority", lambda r: r.priority, -1000, 1000),
)


def check_values(request: GenerateRequest) -> None:
    """Ranges that hold whatever the model and the server limits are."""
    for rule in RANGES:
        rule.check(request)
    stopping = request.stopping
    if stopping.min_tokens > stopping.max_tokens:
        raise fail("min_gt_max", "stopping.min_tokens", value=stopping.min_tokens, limit=stopping.max_tokens)
    for i, s in enumerate(stopping.stop):
        if not s:  # an empty stop string would match before any text
            raise fail("empty", f"stopping.stop[{i}]")
    for token, bias in request.sampling.logit_bias.items():
        in_range(f"sampling.logit_bias[{token}]", bias, -100.0, 100.0)
    guided = [name for name in GUIDED_FIELDS if getattr(request.guided, name)]
    if len(guided) > 1:
        raise fail("exclusive", "guided", fields=", ".join(f"guided.{name}" for name in GUIDED_FIELDS))
    drafts = request.speculative.num_draft_tokens
    if drafts is not None and drafts < 0:
        raise fail("at_least", "speculative.num_draft_tokens", limit=0, value=drafts)


def _token_range(field: str, ids: Any, vocab_size: int) -> None:
    bad = next((t for t in ids if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise fail("token_range", field, value=bad, limit=vocab_size)


def prompt_field(prompt: Prompt) -> str:
    """The input a client set, to name in a message about the prompt as a whole ("prompt" when given as ids only)."""
    return next((name for name in ("text", "token_ids", "messages") if getattr(prompt, name)), "prompt")


def context_chars(prompt: Prompt, max_model_len: int, per_token: int, source: str) -> None:
    """Text that cannot fit the context window even at `per_token` characters a token: refused before it is
    tokenized, which would cost time (on the event loop, or in the engine) that rejecting it afterwards wastes."""
    chars = len(prompt.text) if prompt.text else sum(len(m.content) for m in prompt.messages or ())
    limit = max_model_len * per_token
    if chars > limit:
        raise fail("context_chars", prompt_field(prompt), value=chars, window=max_model_len, per=per_token,
                   source=source, limit=limit)


def context_exceeded(prompt: Prompt, num_tokens: int, max_model_len: int) -> errors.InvalidArgument:
    message = MESSAGES["context"].format(value=num_tokens, limit=max_model_len)
    return errors.InvalidArgument(message, field=prompt_field(prompt))


# -- the engine: once the prompt is tokens ---------------------------------------------------------------------------


def check_tokens(
    request: GenerateRequest, prompt_ids: Sequence[int], *, vocab_size: int, max_model_len: int, max_top_logprobs: int
) -> None:
    """What an engine needs to hold before it queues a request: values, the context window, the vocabulary."""
    check_values(request)
    n = len(prompt_ids)
    if n == 0:
        raise errors.InvalidArgument(MESSAGES["empty_prompt"], field=prompt_field(request.prompt))
    if n >= max_model_len:
        raise context_exceeded(request.prompt, n, max_model_len)
    _token_range("token_ids", prompt_ids, vocab_size)
    _token_range("sampling.logit_bias", request.sampling.logit_bias, vocab_size)
    _token_range("stopping.stop_token_ids", request.stopping.stop_token_ids, vocab_size)
    if request.response.top_logprobs > max_top_logprobs:
        raise fail("at_most", "response.top_logprobs", limit=max_top_logprobs, value=request.response.top_logprobs)


# -- the server: limits and capabilities -----------------------------------------------------------------------------


def request_id(value: str, limits: LimitsConfig) -> None:
    if len(value) > limits.max_request_id_length:
        raise fail("too_long", "request_id", limit=limits.max_request_id_length, value=len(value))
    if not REQUEST_ID_RE.fullmatch(value):  # fullmatch: "$" alone lets a trailing "\n" through
        raise fail("pattern", "request_id", pattern=REQUEST_ID_RE.pattern, value=quote(value))


def adapter_name(value: str, field: str = "adapter") -> None:
    if not ADAPTER_NAME_RE.fullmatch(value):
        raise fail("pattern", field, pattern=ADAPTER_NAME_RE.pattern, value=quote(value))


def default_max_tokens(info: ServedModel, limits: LimitsConfig) -> int:
    """max_tokens for a request that does not set it: the server default, never more than the model can hold."""
    return min(limits.default_max_tokens, max_tokens_limit(info, limits))


def max_tokens_limit(info: ServedModel, limits: LimitsConfig) -> int:
    return min(limits.max_tokens, info.max_context_length)


def prompt_input(prompt: Prompt, limits: LimitsConfig, vocab_size: int) -> None:
    """Exactly one input, each within its limits."""
    given = [name for name in ("text", "token_ids", "messages") if getattr(prompt, name)]
    if len(given) != 1:
        raise fail("one_input", "text", got=", ".join(given) or "none")
    if prompt.text and len(prompt.text) > limits.max_prompt_chars:
        raise fail("too_long", "text", limit=limits.max_prompt_chars, value=len(prompt.text))
    if prompt.token_ids:
        if len(prompt.token_ids) > limits.max_prompt_tokens:
            raise fail("too_many", "token_ids", limit=limits.max_prompt_tokens, value=len(prompt.token_ids))
        _token_range("token_ids", prompt.token_ids, vocab_size)
    if prompt.messages:
        if len(prompt.messages) > limits.max_messages:
            raise fail("too_many", "messages", limit=limits.max_messages, value=len(prompt.messages))
        total = 0
        for i, m in enumerate(prompt.messages):
            if m.role not in CHAT_ROLES:
                raise fail("one_of", f"messages[{i}].role", choices=", ".join(CHAT_ROLES), value=quote(m.role))
            total += len(m.content)
        if total > limits.max_prompt_chars:
            raise fail("too_long", "messages", limit=limits.max_prompt_chars, value=total)


def check_request(request: GenerateRequest, info: ServedModel, limits: LimitsConfig, *, n: int = 1) -> None:
    """Everything the server checks before a request is admitted. `n`: outputs asked for (fanned out later)."""
    caps = info.capabilities
    prompt_input(request.prompt, limits, info.vocab_size)
    context_chars(request.prompt, info.max_context_length, limits.max_chars_per_token, "limits.max_chars_per_token")
    if request.prompt.messages and not caps.chat_template:
        raise unsupported("messages", "chat messages (the model has no chat template)", info)
    if n > limits.max_n:
        raise fail("at_most", "n", limit=limits.max_n, value=n)
    if request.adapter:
        adapter_name(request.adapter)
        if not caps.lora:
            raise unsupported("adapter", "LoRA adapters", info)
    _stopping(request, info, limits)  # first: its max_tokens message names the model's upper bound too
    check_values(request)
    _sampling(request, info, limits)
    _response(request, info, limits)
    guided_size(request.guided, limits)  # first: a huge constraint is refused unread, whatever the executor
    guided_supported(request, info)
    drafts = request.speculative.num_draft_tokens
    if drafts and caps.speculative and drafts > caps.num_draft_tokens:
        raise fail("draft_limit", "speculative.num_draft_tokens", limit=caps.num_draft_tokens, value=drafts)
    _tools(request, limits)


def guided_supported(request: GenerateRequest, info: ServedModel) -> None:
    """The request's guided decoding (its own, or the one a forced tool call set) is one the executor enforces."""
    guided = next((name for name in GUIDED_FIELDS if getattr(request.guided, name)), None)
    if guided is not None and guided not in info.capabilities.guided:
        what = "forced tool calls (they need guided decoding by json_schema)" if request.tools else f"guided decoding by {guided}"
        raise unsupported("tool_choice" if request.tools else f"guided.{guided}", what, info)


def guided_size(guided: GuidedDecoding, limits: LimitsConfig, field: str | None = None) -> None:
    """Small enough to compile: compile time and memory grow with the constraint. `field`: what to name instead of
    the guided field (a forced tool call's schema comes from `tools`)."""
    for name in ("json_schema", "regex", "grammar"):
        text = getattr(guided, name)
        if text:
            over_limit(field or f"guided.{name}", len(text), limits, "max_guided_chars")
    if guided.choice:
        over_limit(field or "guided.choice", len(guided.choice), limits, "max_guided_choices", "entries")
        over_limit(field or "guided.choice", sum(map(len, guided.choice)), limits, "max_guided_chars")


def _json_object(field: str, text: str) -> None:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise fail("json_object", field, value=quote(text))


def _tools(request: GenerateRequest, limits: LimitsConfig) -> None:
    if len(request.tools) > limits.max_tools:
        raise fail("too_many", "tools", limit=limits.max_tools, value=len(request.tools))
    if request.tools and not request.prompt.messages:
        raise errors.InvalidArgument(MESSAGES["tools_need_chat"], field="tools")
    names: set[str] = set()
    for i, tool in enumerate(request.tools):
        if not TOOL_NAME_RE.fullmatch(tool.name) or tool.name in TOOL_CHOICES:
            raise fail("pattern", f"tools[{i}].name", pattern=TOOL_NAME_RE.pattern + " (not auto/none/required)",
                       value=quote(tool.name))
        if tool.name in names:
            raise fail("duplicate", "tools", value=quote(tool.name))
        names.add(tool.name)
        if tool.parameters:
            _json_object(f"tools[{i}].parameters", tool.parameters)
    if request.tool_choice not in TOOL_CHOICES and request.tool_choice not in names:
        raise errors.InvalidArgument(MESSAGES["tool_choice"].format(value=quote(request.tool_choice)), field="tool_choice")
    for i, m in enumerate(request.prompt.messages or ()):
        for j, call in enumerate(m.tool_calls):
            _json_object(f"messages[{i}].tool_calls[{j}].arguments", call.arguments)


def _sampling(request: GenerateRequest, info: ServedModel, limits: LimitsConfig) -> None:
    s, caps = request.sampling, info.capabilities
    if s.min_p and not caps.min_p:
        raise unsupported("sampling.min_p", "min_p sampling", info)
    if (s.presence_penalty or s.frequency_penalty or s.repetition_penalty != 1.0) and not caps.penalties:
        raise unsupported("sampling", "repetition/presence/frequency penalties", info)
    if s.seed is not None and not caps.seed:
        raise unsupported("sampling.seed", "seeded sampling", info)
    if s.logit_bias:
        if not caps.logit_bias:
            raise unsupported("sampling.logit_bias", "logit bias", info)
        if len(s.logit_bias) > limits.max_logit_bias:
            raise fail("too_many", "sampling.logit_bias", limit=limits.max_logit_bias, value=len(s.logit_bias))
        _token_range("sampling.logit_bias", s.logit_bias, info.vocab_size)


def _stopping(request: GenerateRequest, info: ServedModel, limits: LimitsConfig) -> None:
    st = request.stopping
    upper = max_tokens_limit(info, limits)
    if not 1 <= st.max_tokens <= upper:
        raise fail("range", "stopping.max_tokens", range=f"[1, {upper}]", value=st.max_tokens)
    if len(st.stop) > limits.max_stop:
        raise fail("too_many", "stopping.stop", limit=limits.max_stop, value=len(st.stop))
    for i, s in enumerate(st.stop):
        if len(s) > limits.max_stop_length:
            raise fail("too_long", f"stopping.stop[{i}]", limit=limits.max_stop_length, value=len(s))
    if len(st.stop_token_ids) > limits.max_stop:
        raise fail("too_many", "stopping.stop_token_ids", limit=limits.max_stop, value=len(st.stop_token_ids))
    _token_range("stopping.stop_token_ids", st.stop_token_ids, info.vocab_size)


def _response(request: GenerateRequest, info: ServedModel, limits: LimitsConfig) -> None:
    r, caps = request.response, info.capabilities
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
