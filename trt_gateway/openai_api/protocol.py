"""OpenAI JSON bodies -> `types.GenerateRequest`: every field read here, each wrong one refused naming the OpenAI
parameter. Range checks are not repeated: the request then goes through the one request check
(`trt_gateway.validation`), whose dotted field names `param_name` maps back to OpenAI's.

Accepted: the sampling and stopping parameters of the OpenAI API, `n`, `logprobs`/`top_logprobs`, `seed`,
`response_format` (json_object, json_schema), `stream_options.include_usage`, and the extra fields vLLM accepts
(top_k, min_p, repetition_penalty, min_tokens, ignore_eos, stop_token_ids, include_stop_str_in_output, priority,
guided_json, guided_regex, guided_choice, guided_grammar). Fields that only describe the caller (user, metadata,
store, service_tier) are ignored; anything else unknown is refused rather than silently dropped.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trt_gateway import errors
from trt_gateway import types as t
from trt_gateway.errors import quote

IGNORED = frozenset({"user", "metadata", "store", "service_tier", "skip_special_tokens",
                     "spaces_between_special_tokens"})
COMMON = frozenset({
    "model", "max_tokens", "temperature", "top_p", "n", "stream", "stream_options", "stop", "seed",
    "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "response_format",
    # vLLM's extra sampling and guided-decoding fields
    "top_k", "min_p", "repetition_penalty", "min_tokens", "ignore_eos", "stop_token_ids",
    "include_stop_str_in_output", "priority", "guided_json", "guided_regex", "guided_choice", "guided_grammar",
})
COMPLETION_FIELDS = COMMON | {"prompt", "echo", "best_of", "suffix"}
CHAT_FIELDS = COMMON | {"messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice",
                              "parallel_tool_calls"}
CHAT_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}

# dotted field of `types.GenerateRequest` (the request check's names) -> OpenAI parameter
PARAMS = {
    "text": "prompt", "token_ids": "prompt", "prompt": "prompt", "n": "n", "adapter": "model", "model": "model",
    "sampling.temperature": "temperature", "sampling.top_p": "top_p", "sampling.top_k": "top_k",
    "sampling.min_p": "min_p", "sampling.repetition_penalty": "repetition_penalty",
    "sampling.presence_penalty": "presence_penalty", "sampling.frequency_penalty": "frequency_penalty",
    "sampling.seed": "seed", "sampling.logit_bias": "logit_bias", "sampling": "presence_penalty",
    "stopping.max_tokens": "max_tokens", "stopping.min_tokens": "min_tokens", "stopping.stop": "stop",
    "stopping.stop_token_ids": "stop_token_ids", "response.top_logprobs": "top_logprobs",
    "response.logprobs": "logprobs", "guided": "response_format", "guided.json_schema": "response_format",
    "guided.regex": "guided_regex", "guided.grammar": "guided_grammar", "guided.choice": "guided_choice",
    "priority": "priority", "request_id": "x-request-id", "tools": "tools", "tool_choice": "tool_choice",
}


def param_name(field: str | None) -> str | None:
    """The OpenAI parameter behind a dotted field name (messages[3].role and logit_bias[7] keep their index)."""
    if field is None:
        return None
    if field in PARAMS:
        return PARAMS[field]
    head, bracket, rest = field.partition("[")
    return PARAMS.get(head, head) + bracket + rest if bracket else field


@dataclass(frozen=True, slots=True)
class Parsed:
    request: t.GenerateRequest
    n: int
    stream: bool
    include_usage: bool


def _fail(param: str, message: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(f"{param}: {message}", field=param)


class _Body:
    """Typed reads from a JSON object; `null` counts as absent, as the SDKs send it."""

    def __init__(self, body: Any, allowed: frozenset[str]) -> None:
        if not isinstance(body, dict):
            raise _fail("body", "the request body must be a JSON object")
        unknown = sorted(set(body) - allowed - IGNORED)
        if unknown:
            raise _fail(unknown[0], f"unknown parameter (supported: see docs/openai.md); got {', '.join(unknown)}")
        self.body = body

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        value = self.body.get(key)
        if value is None:
            return default
        if isinstance(value, bool) and kind in (int, float, (int, float)):  # JSON true is not a number
            raise _fail(key, f"must be a number, got {json.dumps(value)}")
        if kind is float:
            kind = (int, float)
        if not isinstance(value, kind):
            raise _fail(key, f"has the wrong type ({type(value).__name__})")
        return float(value) if kind == (int, float) else value  # type: ignore[arg-type]


def parse_completion(body: Any, *, request_id: str, model: str, default_max_tokens: int) -> Parsed:
    b = _Body(body, COMPLETION_FIELDS)
    if b.get("suffix", str):
        raise _fail("suffix", "is not supported")
    prompt = _prompt(b.body.get("prompt"))
    top = b.get("logprobs", int)
    n = b.get("n", int, 1)
    best_of = b.get("best_of", int)
    if best_of is not None and best_of != n:
        raise _fail("best_of", f"is not supported except equal to n ({n})")
    response = t.ResponseOptions(logprobs=top is not None, top_logprobs=top or 0, echo=b.get("echo", bool, False))
    return _parsed(b, prompt, response, request_id, model, default_max_tokens, b.get("max_tokens", int))


def parse_chat(body: Any, *, request_id: str, model: str, default_max_tokens: int) -> Parsed:
    b = _Body(body, CHAT_FIELDS)
    messages = b.get("messages", list)
    if not messages:
        raise _fail("messages", "must be a non-empty list")
    prompt = t.Prompt(messages=tuple(_message(i, m) for i, m in enumerate(messages)))
    logprobs = b.get("logprobs", bool, False)
    top = b.get("top_logprobs", int, 0)
    if top and not logprobs:
        raise _fail("top_logprobs", "needs logprobs: true")
    max_tokens = b.get("max_completion_tokens", int, b.get("max_tokens", int))
    response = t.ResponseOptions(logprobs=logprobs, top_logprobs=top)
    parsed = _parsed(b, prompt, response, request_id, model, default_max_tokens, max_tokens)
    tools = tuple(_tool(i, x) for i, x in enumerate(b.get("tools", list, [])))
    if not tools:
        return parsed
    request = dataclasses.replace(parsed.request, tools=tools, tool_choice=_tool_choice(b.body.get("tool_choice")),
                                  parallel_tool_calls=b.get("parallel_tool_calls", bool, True))
    return dataclasses.replace(parsed, request=request)


def _parsed(
    b: _Body, prompt: t.Prompt, response: t.ResponseOptions, request_id: str, model: str, default: int, max_tokens: Any
) -> Parsed:
    stream_options = b.get("stream_options", dict, {})
    stop = b.get("stop", (str, list), ())
    stop = (stop,) if isinstance(stop, str) else tuple(stop)
    if not all(isinstance(s, str) for s in stop):
        raise _fail("stop", "must be a string or a list of strings")
    bias = b.get("logit_bias", dict, {})
    try:
        logit_bias = {int(k): float(v) for k, v in bias.items()}
    except (TypeError, ValueError) as exc:
        raise _fail("logit_bias", "must map token ids to numbers") from exc
    stop_ids = b.get("stop_token_ids", list, [])
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in stop_ids):
        raise _fail("stop_token_ids", "must be a list of token ids")
    request = t.GenerateRequest(
        request_id=request_id,
        model=model,
        prompt=prompt,
        sampling=t.SamplingParams(
            temperature=b.get("temperature", float, 1.0),
            top_p=b.get("top_p", float, 1.0),
            top_k=_top_k(b.get("top_k", int, 0)),
            min_p=b.get("min_p", float, 0.0),
            repetition_penalty=b.get("repetition_penalty", float, 1.0),
            presence_penalty=b.get("presence_penalty", float, 0.0),
            frequency_penalty=b.get("frequency_penalty", float, 0.0),
            seed=b.get("seed", int),
            logit_bias=logit_bias,
        ),
        stopping=t.StoppingCriteria(
            max_tokens=max_tokens if max_tokens is not None else default,
            min_tokens=b.get("min_tokens", int, 0),
            stop=stop,
            stop_token_ids=tuple(stop_ids),
            include_stop=b.get("include_stop_str_in_output", bool, False),
            ignore_eos=b.get("ignore_eos", bool, False),
        ),
        response=response,
        guided=_guided(b),
        priority=b.get("priority", int, 0),
    )
    return Parsed(request, b.get("n", int, 1), b.get("stream", bool, False), bool(stream_options.get("include_usage")))


def _top_k(value: int) -> int:
    return 0 if value == -1 else value  # vLLM spells "off" -1; here it is 0 (anything else negative is refused)


def _prompt(value: Any) -> t.Prompt:
    """A string, a list of token ids, or a one-element list of either (batches of prompts are not supported)."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], (str, list)):
        value = value[0]
    if isinstance(value, str):
        return t.Prompt(text=value)
    if isinstance(value, list) and value and all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        return t.Prompt(token_ids=tuple(value))
    if isinstance(value, list) and len(value) > 1 and all(isinstance(p, (str, list)) for p in value):
        raise _fail("prompt", f"a batch of {len(value)} prompts is not supported: send one request per prompt")
    raise _fail("prompt", "must be a string or a list of token ids")


def _message(i: int, m: Any) -> t.ChatMessage:
    if not isinstance(m, dict):
        raise _fail(f"messages[{i}]", "must be an object with role and content")
    role = m.get("role")
    if role not in CHAT_ROLES:
        raise _fail(f"messages[{i}].role", f"must be one of {', '.join(CHAT_ROLES)}, got {quote(str(role))}")
    calls = tuple(_tool_call(f"messages[{i}].tool_calls[{j}]", c) for j, c in enumerate(m.get("tool_calls") or ()))
    call_id = m.get("tool_call_id") or ""
    if not isinstance(call_id, str):
        raise _fail(f"messages[{i}].tool_call_id", "must be a string")
    content = m.get("content")
    if content is None:
        content = ""
    if isinstance(content, list):  # content parts: text only
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _fail(f"messages[{i}].content[{j}]", "only text parts are supported")
            texts.append(part["text"])
        content = "".join(texts)
    if not isinstance(content, str):
        raise _fail(f"messages[{i}].content", "must be a string or a list of text parts")
    return t.ChatMessage(role=CHAT_ROLES[role], content=content, tool_calls=calls, tool_call_id=call_id)


def _tool(i: int, x: Any) -> t.Tool:
    fn = x.get("function") if isinstance(x, dict) and x.get("type", "function") == "function" else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise _fail(f"tools[{i}]", 'must be {"type": "function", "function": {"name": ..., "parameters": {...}}}')
    params = fn.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise _fail(f"tools[{i}].function.parameters", "must be a JSON schema object")
    description = fn.get("description") or ""
    return t.Tool(name=fn["name"], description=str(description), parameters=json.dumps(params) if params else "")


def _tool_choice(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value  # auto, none, required (anything else is refused by the request check)
    fn = value.get("function") if isinstance(value, dict) else None
    if isinstance(fn, dict) and isinstance(fn.get("name"), str):
        return str(fn["name"])
    raise _fail("tool_choice", 'must be "auto", "none", "required" or {"type": "function", "function": {"name": ...}}')


def _tool_call(param: str, c: Any) -> t.ToolCall:
    fn = c.get("function") if isinstance(c, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise _fail(param, 'must be {"id": ..., "type": "function", "function": {"name": ..., "arguments": "..."}}')
    args = fn.get("arguments", "{}")
    return t.ToolCall(id=str(c.get("id") or ""), name=fn["name"], arguments=args if isinstance(args, str) else json.dumps(args))


def _guided(b: _Body) -> t.GuidedDecoding:
    schema: Any = b.get("guided_json", (str, dict))
    fmt: Mapping[str, Any] = b.get("response_format", dict, {})
    kind = fmt.get("type", "text")
    if kind == "json_object":
        schema = schema or {"type": "object"}
    elif kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise _fail("response_format", "json_schema needs {\"json_schema\": {\"name\": ..., \"schema\": {...}}}")
        schema = spec["schema"]
    elif kind != "text":
        raise _fail("response_format", f"type must be text, json_object or json_schema, got {quote(str(kind))}")
    choice = b.get("guided_choice", list, [])
    if not all(isinstance(c, str) for c in choice):
        raise _fail("guided_choice", "must be a list of strings")
    return t.GuidedDecoding(
        json_schema=json.dumps(schema) if isinstance(schema, dict) else schema,
        regex=b.get("guided_regex", str),
        grammar=b.get("guided_grammar", str),
        choice=tuple(choice),
    )
