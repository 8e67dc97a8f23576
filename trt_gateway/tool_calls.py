"""Tool calling, executor-neutral: constraining a forced call, and parsing the model's text into `ToolCall`s.

tool_choice, as the OpenAI API defines it, and what happens here:
- "none": tools are rendered (the model may know of them) but nothing is parsed: all text is content;
- "" / "auto": the model decides; its text is parsed by the configured format's parser (below), and text that is
  not a well-formed call stays content;
- "required" or a tool's name: the output is *constrained* by guided decoding to a JSON value that is a call (for
  a name: that tool's arguments object; for "required": a non-empty list of {"name", "arguments"} over the
  tools), so it always parses and validates, whatever the model.

Formats of unconstrained calls (`server.tool_call_parser`):
- "hermes" (Hermes, Qwen 2.5/3, and most templates that speak `<tool_call>`): each call is
  `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`; text around the blocks is content;
- "llama3_json" (Llama 3.1+): the whole reply is `{"name": ..., "parameters": {...}}` (optionally after
  `<|python_tag|>`, several separated by ";").
Streaming: content is released as it comes, except text that may still be the start of a call, which is held back
until it is known not to be; calls are reported whole on the output's last delta.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

from trt_gateway import errors
from trt_gateway.stopping import partial_suffix
from trt_gateway.types import ChatMessage, GenerateRequest, Tool, ToolCall

PARSERS = ("hermes", "llama3_json")
HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
TOOL_RESPONSE_OPEN, TOOL_RESPONSE_CLOSE = "<tool_response>", "</tool_response>"
PYTHON_TAG = "<|python_tag|>"


def call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _arguments(value: Any) -> str | None:
    """Arguments as JSON text of an object, or None when they are not an object."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else None


def _call(obj: Any, names: set[str], key: str = "arguments") -> ToolCall | None:
    if not isinstance(obj, dict) or obj.get("name") not in names:
        return None
    args = _arguments(obj.get(key, obj.get("arguments", obj.get("parameters", {}))))
    return ToolCall(call_id(), obj["name"], args) if args is not None else None


class Parser(Protocol):
    def push(self, text: str) -> str:
        """Feed output text; return the content that is certainly not part of a call."""

    def finish(self) -> tuple[str, tuple[ToolCall, ...]]:
        """The output ended: the rest of the content, and the calls."""


class HermesParser:
    def __init__(self, names: set[str]) -> None:
        self._names = names
        self._buf = ""  # text not yet released: a possible tag start, or an open call block
        self._calls: list[ToolCall] = []

    def push(self, text: str) -> str:
        self._buf += text
        out = []
        while True:
            start = self._buf.find(HERMES_OPEN)
            if start < 0:
                keep = partial_suffix(self._buf, HERMES_OPEN)
                out.append(self._buf[: len(self._buf) - keep])
                self._buf = self._buf[len(self._buf) - keep :]
                return "".join(out)
            end = self._buf.find(HERMES_CLOSE, start)
            if end < 0:
                out.append(self._buf[:start])
                self._buf = self._buf[start:]
                return "".join(out)
            block = self._buf[start + len(HERMES_OPEN) : end]
            call = self._parse(block)
            if call is not None:
                out.append(self._buf[:start])
                self._calls.append(call)
            else:  # not a call after all: the block is content
                out.append(self._buf[: end + len(HERMES_CLOSE)])
            self._buf = self._buf[end + len(HERMES_CLOSE) :]

    def _parse(self, block: str) -> ToolCall | None:
        try:
            return _call(json.loads(block), self._names)
        except ValueError:
            return None

    def finish(self) -> tuple[str, tuple[ToolCall, ...]]:
        rest, self._buf = self._buf, ""
        if rest.startswith(HERMES_OPEN):  # an unclosed last block (the model stopped at EOS): a call if it parses
            call = self._parse(rest[len(HERMES_OPEN) :])
            if call is not None:
                self._calls.append(call)
                rest = ""
        return rest, tuple(self._calls)


class Llama3JsonParser:
    def __init__(self, names: set[str]) -> None:
        self._names = names
        self._buf = ""
        self._holding: bool | None = None  # None: undecided (only whitespace so far)

    def push(self, text: str) -> str:
        if self._holding is False:
            return text
        self._buf += text
        head = self._buf.lstrip()
        if not head or PYTHON_TAG.startswith(head):
            return ""
        self._holding = head.startswith(("{", PYTHON_TAG))
        if self._holding:
            return ""
        out, self._buf = self._buf, ""
        return out

    def finish(self) -> tuple[str, tuple[ToolCall, ...]]:
        text, self._buf = self._buf, ""
        if not self._holding:
            return text, ()
        body = text.strip().removeprefix(PYTHON_TAG)
        calls = []
        for part in body.split(";"):
            try:
                call = _call(json.loads(part), self._names, key="parameters")
            except ValueError:
                call = None
            if call is None:
                return text, ()  # not all calls: the reply is content, unchanged
            calls.append(call)
        return "", tuple(calls)


class ForcedParser:
    """For a constrained output: the whole text is the call (a name forced) or a list of calls ("required")."""

    def __init__(self, forced: str | None, names: set[str]) -> None:
        self._forced, self._names, self._buf = forced, names, ""

    def push(self, text: str) -> str:
        self._buf += text
        return ""

    def finish(self) -> tuple[str, tuple[ToolCall, ...]]:
        try:
            value = json.loads(self._buf)
        except ValueError:
            return self._buf, ()  # cut short (max_tokens): what was generated is returned as content
        if self._forced is not None:
            args = _arguments(value)
            return ("", (ToolCall(call_id(), self._forced, args),)) if args is not None else (self._buf, ())
        items = [value] if isinstance(value, dict) else value if isinstance(value, list) else []
        calls = [_call(item, self._names) for item in items]
        if not calls or any(c is None for c in calls):
            return self._buf, ()
        return "", tuple(c for c in calls if c is not None)


def parser_for(request: GenerateRequest, fmt: str) -> Parser | None:
    """The parser of one output of `request`, or None when its text is plain content."""
    if not request.tools or request.tool_choice == "none":
        return None
    names = {t.name for t in request.tools}
    if request.tool_choice == "required":
        return ForcedParser(None, names)
    if request.tool_choice not in ("", "auto"):
        return ForcedParser(request.tool_choice, names)
    return HermesParser(names) if fmt == "hermes" else Llama3JsonParser(names)


def constrain(request: GenerateRequest) -> GenerateRequest:
    """For "required" or a named tool: the request with guided decoding that makes its output such a call."""
    choice = request.tool_choice
    if not request.tools or choice in ("", "auto", "none"):
        return request
    if request.guided.kind is not None:
        raise errors.InvalidArgument(
            f"tool_choice {choice!r} constrains the output itself: it cannot be combined with guided.{request.guided.kind}",
            field="tool_choice",
        )
    if choice == "required":
        schema = _required_schema(request.tools, request.parallel_tool_calls)
    else:
        schema = _schema(next(t for t in request.tools if t.name == choice))
    return replace(request, guided=replace(request.guided, json_schema=json.dumps(schema)))


def _schema(tool: Tool) -> dict[str, Any]:
    return json.loads(tool.parameters) if tool.parameters else {"type": "object"}


def _required_schema(tools: Sequence[Tool], parallel: bool) -> dict[str, Any]:
    """A non-empty list of {"name", "arguments"} over `tools` (one such object when not `parallel`). Each tool's arguments schema moves from its own root
    into the list's items, so its local definitions ($defs, definitions) move to the new root, where its
    "#/$defs/..." references must then point: renamed with the tool's name, as two tools may both define "Item"."""
    defs: dict[str, Any] = {}
    one_of = []
    for t in tools:
        params = _schema(t)
        local = {**params.pop("$defs", {}), **params.pop("definitions", {})}
        if local:
            prefix = f"{t.name}__"
            params = _rename_refs(params, prefix)
            defs.update({prefix + k: _rename_refs(v, prefix) for k, v in local.items()})
        one_of.append({"type": "object", "properties": {"name": {"const": t.name}, "arguments": params},
                       "required": ["name", "arguments"]})
    call: dict[str, Any] = {"anyOf": one_of}
    schema = {"type": "array", "minItems": 1, "items": call} if parallel else call
    return {**schema, "$defs": defs} if defs else schema


def _rename_refs(node: Any, prefix: str) -> Any:
    if isinstance(node, dict):
        out = {k: _rename_refs(v, prefix) for k, v in node.items()}
        ref = node.get("$ref")
        if isinstance(ref, str):
            for root in ("#/$defs/", "#/definitions/"):
                if ref.startswith(root):
                    out["$ref"] = "#/$defs/" + prefix + ref[len(root) :]
        return out
    if isinstance(node, list):
        return [_rename_refs(v, prefix) for v in node]
    return node


def as_template_tools(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    """The `tools` variable HF chat templates take (OpenAI's shape)."""
    return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                               "parameters": _schema(t)}} for t in tools]


def template_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Messages as HF chat templates take them: assistant calls with their arguments as objects, tool results with
    the id of the call they answer."""
    out = []
    for m in messages:
        d: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            d["tool_calls"] = [{"id": c.id, "type": "function",
                                "function": {"name": c.name, "arguments": json.loads(c.arguments)}}
                               for c in m.tool_calls]
        if m.tool_call_id:
            d["tool_call_id"] = m.tool_call_id
        out.append(d)
    return out


def with_tools_prompt(messages: list[dict[str, Any]], tools: Sequence[Tool]) -> list[dict[str, Any]]:
    """For a chat template that knows nothing of tools: describe them in a system message, asking for Hermes-style
    <tool_call> blocks (what the default parser reads)."""
    lines = "\n".join(json.dumps(t, ensure_ascii=False) for t in as_template_tools(tools))
    system = (f"You may call these tools:\n{lines}\nTo call one, reply with "
              f'{HERMES_OPEN}{{"name": <tool name>, "arguments": <its arguments>}}{HERMES_CLOSE}')
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{messages[0]['content']}\n\n{system}"}, *messages[1:]]
    return [{"role": "system", "content": system}, *messages]


def hermes_history(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For a chat template that knows nothing of tools (nor, then, of a "tool" role): earlier calls shown as the
    <tool_call> blocks they are generated as, and tool results as user turns in Hermes' <tool_response> blocks."""
    shown = []
    for m in messages:
        calls = m.get("tool_calls")
        if calls:
            blocks = "".join(f"{HERMES_OPEN}{json.dumps(c['function'], ensure_ascii=False)}{HERMES_CLOSE}" for c in calls)
            m = {"role": m["role"], "content": (m.get("content") or "") + blocks}
        elif m["role"] == "tool":
            m = {"role": "user", "content": f"{TOOL_RESPONSE_OPEN}\n{m['content']}\n{TOOL_RESPONSE_CLOSE}"}
        shown.append(m)
    return shown


def mentions_tools(template_source: str | None) -> bool:
    """Whether a chat template renders `tools` itself (HF templates that support tool use read that variable)."""
    return bool(template_source) and "tools" in (template_source or "")


def chat_inputs(
    messages: Sequence[ChatMessage], tools: Sequence[Tool], template_source: str | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(conversation, extra template variables) for rendering `messages` with `tools`: through the template when
    it takes tools, else described in a system turn, with the tool turns of the history shown as text."""
    conversation = template_messages(messages)
    if mentions_tools(template_source):
        return conversation, ({"tools": as_template_tools(tools)} if tools else {})
    if not any(m.tool_calls or m.role == "tool" for m in messages) and not tools:
        return conversation, {}
    shown = hermes_history(conversation)
    return (with_tools_prompt(shown, tools) if tools else shown), {}
