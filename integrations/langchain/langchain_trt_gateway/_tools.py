"""Tool calling for `ChatTrtGateway`: the gateway's own (the `tools` and `tool_choice` request fields).

The server renders the tools through the model's chat template, parses the model's text into calls (or, for a
forced choice, constrains the output by guided decoding so the call always parses), and returns the calls on the
output's last chunk. What is left here is LangChain's side of it:

- `bind_tools`' forms of tools (functions, `BaseTool`s, pydantic classes, JSON schemas) as OpenAI tool dicts, and its
  forms of `tool_choice` ("any", True, a name, {"type": "function", ...}) as the gateway's ("required", a name, ...);
- the server's calls as LangChain `ToolCall`s, and a forced call that did not complete (cut by `max_tokens` or a
  stop string; the server then returns its text as content) as an `InvalidToolCall` saying why.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import InvalidToolCall, ToolCall
from langchain_core.messages.tool import invalid_tool_call, tool_call
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from trt_gateway import types as t

ToolLike = Mapping[str, Any] | type | Callable[..., Any] | BaseTool
_FORCING = ("any", "required")


def format_tools(tools: Sequence[ToolLike]) -> list[dict[str, Any]]:
    """Tools in OpenAI's function format (what `bind_tools` binds and the gateway client sends)."""
    return [convert_to_openai_tool(t) for t in tools]  # type: ignore[arg-type]


def normalize_tool_choice(tool_choice: Any, names: Sequence[str]) -> str:
    """-> "auto", "none", "required" or the name of one bound tool (the gateway's `tool_choice`)."""
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
    """One call's bound tools, as request fields, and how its reply is read."""

    tools: tuple[dict[str, Any], ...]  # OpenAI function format
    choice: str  # "auto", "none", "required" or a tool name

    @classmethod
    def from_kwargs(cls, tools: Sequence[ToolLike] | None, tool_choice: Any) -> ToolPlan | None:
        if not tools:
            if tool_choice not in (None, "auto", "none", False):
                raise ValueError(f"tool_choice={tool_choice!r} needs tools (bind_tools)")
            return None
        formatted = format_tools(tools)
        names = [f["function"]["name"] for f in formatted]
        return cls(tuple(formatted), normalize_tool_choice(tool_choice, names))

    @property
    def forced(self) -> bool:
        return self.choice not in ("auto", "none")

    def request_fields(self) -> dict[str, Any]:
        return {"tools": list(self.tools), "tool_choice": self.choice}

    def read(
        self, content: str, calls: Sequence[t.ToolCall], finish_reason: str | None
    ) -> tuple[str, list[ToolCall], list[InvalidToolCall]]:
        """The server's reply as (content, tool calls, invalid tool calls)."""
        good, bad = convert_calls(calls)
        if self.forced and not calls and content:
            reason = f"the tool call is incomplete (finish_reason={finish_reason!r})"
            if finish_reason == "length":
                reason += ": raise max_tokens, or bound the tool's string and array arguments (maxLength, maxItems)"
            bad.append(invalid_tool_call(name=None, args=content, id=None, error=reason))
        return content, good, bad


def convert_calls(calls: Sequence[t.ToolCall]) -> tuple[list[ToolCall], list[InvalidToolCall]]:
    """The server's calls (arguments as JSON text) as LangChain's (arguments as a dict)."""
    good: list[ToolCall] = []
    bad: list[InvalidToolCall] = []
    for c in calls:
        try:
            args = json.loads(c.arguments)
        except ValueError as exc:  # the server only returns calls whose arguments parse; kept for older servers
            bad.append(invalid_tool_call(name=c.name, args=c.arguments, id=c.id, error=str(exc)))
            continue
        good.append(tool_call(name=c.name, args=args, id=c.id))
    return good, bad


def openai_tool_calls(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """An AI message's calls in OpenAI's shape, as the gateway client sends them on an assistant message."""
    return [{"id": c.get("id") or "", "type": "function",
             "function": {"name": c["name"], "arguments": json.dumps(c["args"], ensure_ascii=False)}} for c in calls]
