"""protobuf <-> the client's Python values. Protobuf types stop here: callers pass keyword arguments and get the
frozen dataclasses of `client.types` (and the reused `trt_gateway.types`) back.

Pure functions, shared by the sync and the async client.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypedDict

from grpc_health.v1 import health_pb2

from trt_gateway import errors
from trt_gateway import types as t
from trt_gateway.client import types as r
from trt_gateway.v1 import gateway_pb2 as pb

if sys.version_info >= (3, 11):
    from typing import Unpack
else:  # pragma: no cover - Python 3.10: typing_extensions comes with grpcio
    from typing_extensions import Unpack

MessageLike = Mapping[str, Any] | tuple[str, str] | t.ChatMessage
ToolLike = Mapping[str, Any] | t.Tool  # t.Tool, or OpenAI's {"type": "function", "function": {...}}, or that function


# -- requests ------------------------------------------------------------------------------------------------------


class GenerateParams(TypedDict, total=False):
    """The keyword arguments of `generate` and `stream` (besides `text`, `timeout` and `metadata`). Only the ones
    given are set on the request, so the server's defaults apply to the rest."""

    token_ids: Sequence[int]
    messages: Sequence[MessageLike]
    model: str
    max_tokens: int
    min_tokens: int
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repetition_penalty: float
    presence_penalty: float
    frequency_penalty: float
    seed: int
    logit_bias: Mapping[int, float]
    stop: str | Sequence[str]
    stop_token_ids: Sequence[int]
    include_stop: bool
    ignore_eos: bool
    logprobs: bool
    top_logprobs: int
    prompt_token_ids: bool
    echo: bool
    adapter: str
    n: int
    priority: int
    json_schema: str | Mapping[str, Any]
    regex: str
    grammar: str
    choice: Sequence[str]
    speculative: bool  # False opts this request out of the server's speculative decoding
    num_draft_tokens: int
    request_id: str
    tools: Sequence[ToolLike]  # with chat messages; calls come back on the last chunk / in Output.tool_calls
    tool_choice: str  # "auto" (default), "none", "required", or a tool's name (forced)
    parallel_tool_calls: bool  # False: a "required" reply is exactly one call (default: one or more)


# keyword -> (sub-message or "" for the top level, proto field name)
_FIELDS: dict[str, tuple[str, str]] = {
    "model": ("", "model"),
    "adapter": ("", "adapter"),
    "n": ("", "n"),
    "priority": ("", "priority"),
    "request_id": ("", "request_id"),
    "temperature": ("sampling", "temperature"),
    "top_p": ("sampling", "top_p"),
    "top_k": ("sampling", "top_k"),
    "min_p": ("sampling", "min_p"),
    "repetition_penalty": ("sampling", "repetition_penalty"),
    "presence_penalty": ("sampling", "presence_penalty"),
    "frequency_penalty": ("sampling", "frequency_penalty"),
    "seed": ("sampling", "seed"),
    "max_tokens": ("stopping", "max_tokens"),
    "min_tokens": ("stopping", "min_tokens"),
    "include_stop": ("stopping", "include_stop"),
    "ignore_eos": ("stopping", "ignore_eos"),
    "logprobs": ("response", "logprobs"),
    "top_logprobs": ("response", "top_logprobs"),
    "prompt_token_ids": ("response", "prompt_token_ids"),
    "echo": ("response", "echo"),
    "regex": ("guided", "regex"),
    "grammar": ("guided", "grammar"),
    "num_draft_tokens": ("speculative", "num_draft_tokens"),
}
_REPEATED: dict[str, tuple[str, str]] = {
    "token_ids": ("", "token_ids"),
    "stop_token_ids": ("stopping", "stop_token_ids"),
    "choice": ("guided", "choice"),
}
_SPECIAL = {"text", "messages", "logit_bias", "stop", "json_schema", "speculative", "tools", "tool_choice",
            "parallel_tool_calls"}
GENERATE_KEYWORDS = frozenset(_FIELDS) | frozenset(_REPEATED) | _SPECIAL


def generate_request(text: str | None = None, **params: Unpack[GenerateParams]) -> pb.GenerateRequest:
    """Build a GenerateRequest from the keyword arguments. None means "not given" for every keyword."""
    unknown = sorted(set(params) - GENERATE_KEYWORDS)
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}")
    msg = pb.GenerateRequest()
    values: dict[str, Any] = {k: v for k, v in params.items() if v is not None}
    if text is not None:
        msg.text = text
    for key, (sub, name) in (*_FIELDS.items(), *_REPEATED.items()):
        if key not in values:
            continue
        target = getattr(msg, sub) if sub else msg
        try:
            if key in _REPEATED:
                getattr(target, name).extend(values[key])
            else:
                setattr(target, name, values[key])
        except (TypeError, ValueError) as exc:  # protobuf refuses a mistyped or out-of-range value
            field = f"{sub}.{name}" if sub else name
            raise errors.InvalidArgument(f"{key}: {exc}", field=field) from exc
    if "messages" in values:
        msg.messages.extend(chat_messages(values["messages"]))
    if "logit_bias" in values:
        msg.sampling.logit_bias.update({int(k): float(v) for k, v in values["logit_bias"].items()})
    if "stop" in values:
        stop = values["stop"]
        msg.stopping.stop.extend([stop] if isinstance(stop, str) else stop)
    if "json_schema" in values:
        schema = values["json_schema"]
        msg.guided.json_schema = schema if isinstance(schema, str) else json.dumps(schema)
    if values.get("speculative") is False:
        msg.speculative.disable = True
    if "tools" in values:
        msg.tools.extend(tools(values["tools"]))
    if "tool_choice" in values:
        msg.tool_choice = values["tool_choice"]
    if "parallel_tool_calls" in values:
        msg.parallel_tool_calls = bool(values["parallel_tool_calls"])
    return msg


def tools(items: Iterable[ToolLike]) -> list[pb.Tool]:
    out = []
    for i, x in enumerate(items):
        if isinstance(x, t.Tool):
            out.append(pb.Tool(name=x.name, description=x.description, parameters=x.parameters))
            continue
        fn = x.get("function", x) if isinstance(x, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise TypeError(f"tools[{i}] must be a types.Tool or a {{'name', 'parameters'}} mapping (OpenAI's shape)")
        params = fn.get("parameters")
        out.append(pb.Tool(name=fn["name"], description=str(fn.get("description") or ""),
                           parameters=params if isinstance(params, str) else json.dumps(params) if params else ""))
    return out


def _tool_call(c: Any) -> pb.ToolCall:
    if isinstance(c, t.ToolCall):
        return pb.ToolCall(id=c.id, name=c.name, arguments=c.arguments)
    fn = c.get("function", c)
    args = fn.get("arguments", "{}")
    return pb.ToolCall(id=str(c.get("id") or ""), name=fn["name"], arguments=args if isinstance(args, str) else json.dumps(args))


def chat_messages(messages: Iterable[MessageLike]) -> list[pb.ChatMessage]:
    """Accept {"role", "content"} mappings (with OpenAI's `tool_calls` / `tool_call_id`), (role, content) tuples or
    `types.ChatMessage`."""
    out = []
    for i, m in enumerate(messages):
        calls: Any = ()
        call_id: Any = ""
        if isinstance(m, Mapping):
            role, content = m.get("role"), m.get("content")
            calls, call_id = m.get("tool_calls") or (), m.get("tool_call_id") or ""
            if content is None and calls:
                content = ""  # an assistant turn that only calls tools
        elif isinstance(m, tuple) and len(m) == 2:
            role, content = m
        else:
            role, content = getattr(m, "role", None), getattr(m, "content", None)
            calls, call_id = getattr(m, "tool_calls", ()), getattr(m, "tool_call_id", "")
        if not isinstance(role, str) or not isinstance(content, str):
            raise TypeError(f"messages[{i}] must be a {{'role', 'content'}} mapping or a (role, content) tuple of str")
        try:
            proto_calls = [_tool_call(c) for c in calls]
        except (AttributeError, KeyError, TypeError) as exc:
            raise TypeError(f"messages[{i}].tool_calls: each must be a types.ToolCall or OpenAI's shape") from exc
        out.append(pb.ChatMessage(role=role, content=content, tool_calls=proto_calls, tool_call_id=str(call_id)))
    return out


def tokenize_request(
    text: str | None, messages: Iterable[MessageLike] | None, model: str, add_special_tokens: bool
) -> pb.TokenizeRequest:
    msg = pb.TokenizeRequest(model=model, text=text or "", messages=chat_messages(messages or ()))
    if not add_special_tokens:  # unset = the server default (true)
        msg.add_special_tokens = False
    return msg


# -- responses -----------------------------------------------------------------------------------------------------

_FINISH = {
    pb.FINISH_REASON_LENGTH: t.FinishReason.LENGTH.value,
    pb.FINISH_REASON_STOP_TOKEN: t.FinishReason.STOP_TOKEN.value,
    pb.FINISH_REASON_STOP_STRING: t.FinishReason.STOP_STRING.value,
    pb.FINISH_REASON_CANCELLED: t.FinishReason.CANCELLED.value,
    pb.FINISH_REASON_ERROR: t.FinishReason.ERROR.value,
}
_RESIDENCY = {pb.RESIDENCY_GPU: t.Residency.GPU, pb.RESIDENCY_CPU: t.Residency.CPU}


def _usage(u: pb.Usage) -> t.Usage:
    return t.Usage(u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.draft_tokens, u.accepted_tokens)


def _logprobs(items: Iterable[pb.TokenLogprob]) -> tuple[t.TokenLogprob, ...]:
    return tuple(
        t.TokenLogprob(
            lp.token_id,
            lp.token,
            lp.logprob,
            tuple(t.TopLogprob(a.token_id, a.token, a.logprob) for a in lp.top_logprobs),
        )
        for lp in items
    )


def _timings(m: pb.Timings) -> r.Timings:
    return r.Timings(m.queue_time_ms, m.time_to_first_token_ms, m.total_time_ms)


def _prompt(p: pb.PromptInfo) -> t.PromptInfo:
    return t.PromptInfo(num_tokens=p.num_tokens, token_ids=tuple(p.token_ids), text=p.text)


def _tool_calls(calls: Iterable[pb.ToolCall]) -> tuple[t.ToolCall, ...]:
    return tuple(t.ToolCall(c.id, c.name, c.arguments) for c in calls)


def _stop_token(m: pb.Output | pb.GenerateStreamResponse) -> int | None:
    return m.matched_stop_token_id if m.HasField("matched_stop_token_id") else None


def output(o: pb.Output) -> r.Output:
    return r.Output(
        index=o.index,
        text=o.text,
        token_ids=tuple(o.token_ids),
        finish_reason=_FINISH.get(o.finish_reason),
        usage=_usage(o.usage),
        logprobs=_logprobs(o.logprobs),
        matched_stop=o.matched_stop or None,
        matched_stop_token_id=_stop_token(o),
        tool_calls=_tool_calls(o.tool_calls),
        reasoning=o.reasoning,
    )


def completion(resp: pb.GenerateResponse) -> r.Completion:
    outputs = tuple(sorted((output(o) for o in resp.outputs), key=lambda o: o.index))
    first = outputs[0] if outputs else r.Output(0, "", (), None, t.Usage())
    return r.Completion(
        request_id=resp.request_id,
        text=first.text,
        token_ids=first.token_ids,
        finish_reason=first.finish_reason,
        usage=_usage(resp.usage),
        outputs=outputs,
        logprobs=first.logprobs,
        matched_stop=first.matched_stop,
        matched_stop_token_id=first.matched_stop_token_id,
        tool_calls=first.tool_calls,
        reasoning=first.reasoning,
        prompt=_prompt(resp.prompt) if resp.HasField("prompt") else None,
        timings=_timings(resp.timings) if resp.HasField("timings") else None,
    )


def stream_chunk(c: pb.GenerateStreamResponse) -> r.StreamChunk:
    return r.StreamChunk(
        request_id=c.request_id,
        index=c.index,
        text=c.text,
        token_ids=tuple(c.token_ids),
        logprobs=_logprobs(c.logprobs),
        finish_reason=_FINISH.get(c.finish_reason),
        matched_stop=c.matched_stop or None,
        matched_stop_token_id=_stop_token(c),
        usage=_usage(c.usage) if c.HasField("usage") else None,
        timings=_timings(c.timings) if c.HasField("timings") else None,
        prompt=_prompt(c.prompt) if c.HasField("prompt") else None,
        tool_calls=_tool_calls(c.tool_calls),
        reasoning=c.reasoning,
    )


def model_info(m: pb.ModelInfo) -> r.ModelInfo:
    c, lim = m.capabilities, m.limits
    return r.ModelInfo(
        name=m.name,
        executor=m.executor,
        executor_version=m.executor_version,
        max_context_length=m.max_context_length,
        vocab_size=m.vocab_size,
        eos_token_ids=tuple(m.eos_token_ids),
        capabilities=t.Capabilities(
            lora=c.lora,
            max_lora_rank=c.max_lora_rank,
            max_loras=c.max_loras,
            speculative=c.speculative,
            num_draft_tokens=c.num_draft_tokens,
            guided=tuple(c.guided),
            logprobs=c.logprobs,
            max_top_logprobs=c.max_top_logprobs,
            chat_template=c.chat_template,
            tokenize=c.tokenize,
            seed=c.seed,
            penalties=c.penalties,
            logit_bias=c.logit_bias,
            min_p=c.min_p,
        ),
        limits=r.ModelLimits(
            max_n=lim.max_n,
            max_stop=lim.max_stop,
            max_stop_length=lim.max_stop_length,
            max_tokens=lim.max_tokens,
            default_max_tokens=lim.default_max_tokens,
            max_prompt_chars=lim.max_prompt_chars,
            max_logit_bias=lim.max_logit_bias,
        ),
        ready=m.ready,
        default=m.default,
    )


def adapter_info(a: pb.AdapterInfo) -> t.AdapterInfo:
    return t.AdapterInfo(
        name=a.name,
        path=a.path,
        model=a.model,
        rank=a.rank,
        alpha=a.alpha,
        target_modules=tuple(a.target_modules),
        residency=_RESIDENCY.get(a.residency, t.Residency.DISK),
        slot=a.slot,
        active_requests=a.active_requests,
    )


def health_status(resp: health_pb2.HealthCheckResponse) -> str:
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))
