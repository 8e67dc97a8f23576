"""Tool calling for `ChatTrtGateway`, built on the gateway's guided decoding.

The gateway takes plain {"role", "content"} messages (no `tools` field, no tool calls on messages), so tools work the
way they do for any text model:

- the bound tools are described to the model in a system message (`tool_prompt`, with one JSON line per tool);
- a call is the JSON object `{"name": <tool name>, "arguments": {...}}`. When `tool_choice` forces a call ("any",
  "required", True or a tool name), the output is *constrained* to that shape by a JSON schema (`json_schema`
  request field: the name is an enum of the allowed tools, the arguments that tool's parameters schema, an `anyOf`
  over the tools when several are allowed), so it always parses and always validates, whatever the model;
- with `tool_choice` "auto" (or None) nothing is constrained: the model answers in text, and a reply that is exactly
  such a JSON object (or a list of them) naming a bound tool becomes a tool call; "none" neither describes the tools
  nor parses the reply;
- earlier tool calls in the history are sent as the same JSON lines, in the assistant's turn, and tool results as
  messages of the role `tool_role`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import InvalidToolCall, ToolCall
from langchain_core.messages.tool import invalid_tool_call, tool_call
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

DEFAULT_TOOL_PROMPT = (
    "You can call these tools:\n"
    "{tools}\n"
    'To call a tool, reply with only a JSON object {{"name": <tool name>, "arguments": <its arguments>}}.'
)
"""The system text that describes bound tools; `{tools}` becomes one JSON line per tool (name, description,
parameters). Set `ChatTrtGateway(tool_prompt=...)` to change it, or "" to describe the tools yourself."""

ToolLike = Mapping[str, Any] | type | Callable[..., Any] | BaseTool
_FORCING = ("any", "required")
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def format_tools(tools: Sequence[ToolLike]) -> list[dict[str, Any]]:
    """Tools in OpenAI's function format (what `bind_tools` binds). Names should be unique: a call names its tool,
    and of two tools with one name the first one's schema is used."""
    return [convert_to_openai_tool(t) for t in tools]  # type: ignore[arg-type]


def normalize_tool_choice(tool_choice: Any, names: Sequence[str]) -> str:
    """-> "auto", "none", "required" or the name of one bound tool."""
    if tool_choice is None or tool_choice == "auto":
        return "auto"
    if tool_choice is False or tool_choice == "none":
        return "none"
    if tool_choice is True or tool_choice in _FORCING:
        return "required"
    if isinstance(tool_choice, Mapping):  # {"type": "function", "function": {"name": ...}} or {"name": ...}
        function = tool_choice.get("function")
        tool_choice = function.get("name") if isinstance(function, Mapping) else tool_choice.get("name")
    if isinstance(tool_choice, str) and tool_choice in names:
        return tool_choice
    raise ValueError(
        f"tool_choice must be 'auto', 'none', 'any', 'required', True, False or a bound tool's name "
        f"{sorted(names)}, got {tool_choice!r}"
    )


@dataclass(frozen=True)
class ToolPlan:
    """What one call does with its bound tools: the prompt, the constraint and how the reply is read."""

    tools: tuple[dict[str, Any], ...]  # OpenAI function format
    choice: str  # "auto", "none", "required" or a tool name

    @classmethod
    def from_kwargs(cls, tools: Sequence[ToolLike] | None, tool_choice: Any) -> ToolPlan | None:
        if not tools:
            if tool_choice not in (None, "auto", "none", False):
                raise ValueError(f"tool_choice={tool_choice!r} needs tools (bind_tools)")
            return None
        formatted = format_tools(tools)
        names = [t["function"]["name"] for t in formatted]
        return cls(tuple(formatted), normalize_tool_choice(tool_choice, names))

    @property
    def names(self) -> list[str]:
        return [t["function"]["name"] for t in self.tools]

    @property
    def forced(self) -> bool:
        return self.choice not in ("auto", "none")

    @property
    def parses(self) -> bool:
        """Whether the reply may hold tool calls."""
        return self.choice != "none"

    def allowed(self) -> list[dict[str, Any]]:
        return self._unique() if self.choice in ("auto", "required") else [self._tool(self.choice)]

    def _tool(self, name: str) -> dict[str, Any]:
        return next(t for t in self.tools if t["function"]["name"] == name)

    def _unique(self) -> list[dict[str, Any]]:
        return [self._tool(n) for n in dict.fromkeys(self.names)]

    def json_schema(self) -> dict[str, Any] | None:
        """The guided-decoding schema of a forced call, None when the call is not forced."""
        if not self.forced:
            return None
        return call_schema(self.allowed())

    def system_text(self, template: str) -> str | None:
        if self.choice == "none" or not template:
            return None
        lines = []
        for t in self.allowed():
            f = t["function"]
            described = {"name": f["name"], "description": f.get("description", ""), "parameters": _parameters(t)}
            lines.append(json.dumps(described, ensure_ascii=False))
        return template.format(tools="\n".join(lines))

    def with_prompt(self, messages: list[dict[str, str]], template: str) -> list[dict[str, str]]:
        """The gateway messages with the tools described in the (first) system message."""
        text = self.system_text(template)
        if text is None:
            return messages
        if messages and messages[0]["role"] == "system":
            first = messages[0]["content"]
            return [{"role": "system", "content": f"{first}\n\n{text}" if first else text}, *messages[1:]]
        return [{"role": "system", "content": text}, *messages]

    def parse(self, text: str, finish_reason: str | None) -> tuple[str, list[ToolCall], list[InvalidToolCall]]:
        """The reply as (content, tool calls, invalid tool calls).

        A forced call that does not parse (only possible when the output was cut, at `max_tokens` or by a stop
        string) keeps its text as content and is reported as an invalid tool call, with the reason.
        """
        calls = self._calls(text)
        if calls is not None:
            return "", [tool_call(name=n, args=a, id=new_call_id()) for n, a in calls], []
        if not self.forced:
            return text, [], []
        reason = f"the tool call is incomplete (finish_reason={finish_reason!r})"
        if finish_reason == "length":
            reason += ": raise max_tokens, or bound the tool's string and array arguments (maxLength, maxItems)"
        return text, [], [invalid_tool_call(name=None, args=text, id=new_call_id(), error=reason)]

    def _calls(self, text: str) -> list[tuple[str, dict[str, Any]]] | None:
        body = text.strip()
        if not self.forced:  # a free-text reply may fence its JSON
            fenced = _FENCE.match(body)
            body = fenced.group(1) if fenced else body
        if not body.startswith(("{", "[")):
            return None
        try:
            value = json.loads(body)
        except json.JSONDecodeError:
            return None
        items = value if isinstance(value, list) and value else [value]
        calls = []
        allowed = {t["function"]["name"] for t in self.allowed()}
        for item in items:
            if not isinstance(item, dict) or item.get("name") not in allowed:
                return None
            args = item.get("arguments", item.get("parameters", {}))
            if isinstance(args, str):  # OpenAI's wire format sends arguments as a JSON string
                try:
                    args = json.loads(args)
                except json.JSONDecodeError:
                    return None
            if not isinstance(args, dict) or set(item) - {"name", "arguments", "parameters"}:
                return None
            calls.append((item["name"], args))
        return calls


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def render_tool_calls(calls: Sequence[ToolCall]) -> str:
    """Earlier tool calls as the JSON lines a call is generated as (with the separators guided output uses)."""
    return "\n".join(json.dumps({"name": c["name"], "arguments": c["args"]}, ensure_ascii=False) for c in calls)


def _parameters(tool: Mapping[str, Any]) -> dict[str, Any]:
    params = tool["function"].get("parameters")
    return dict(params) if params else {"type": "object", "properties": {}}


def call_schema(tools: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """{"name": <enum>, "arguments": <parameters>} for one tool, an anyOf of those for several. Each tool's `$defs`
    move to the root (where their "#/$defs/..." references point), prefixed with the tool's name."""
    defs: dict[str, Any] = {}
    branches = []
    for t in tools:
        name = t["function"]["name"]
        params = _parameters(t)
        local = {**params.pop("$defs", {}), **params.pop("definitions", {})}
        if local:
            prefix = f"{name}__"
            params = _rename_refs(params, prefix)
            defs.update({prefix + k: _rename_refs(v, prefix) for k, v in local.items()})
        branches.append(
            {
                "type": "object",
                "properties": {"name": {"type": "string", "enum": [name]}, "arguments": params},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    schema: dict[str, Any] = branches[0] if len(branches) == 1 else {"anyOf": branches}
    if defs:
        schema = {**schema, "$defs": defs}
    return schema


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
