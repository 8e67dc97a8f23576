"""Function calling for `TrtGateway`, on the gateway's own tools (the `tools`, `tool_choice` and
`parallel_tool_calls` request fields): the server renders the tools through the chat template, parses the calls out
of the reply (or, for a forced choice, constrains it by guided decoding), and returns them with the output.

Messages both ways: an assistant turn's calls are `ToolCallBlock`s (and, for code that reads them there, OpenAI-shaped
`additional_kwargs["tool_calls"]`); a tool result is a "tool" message with `additional_kwargs["tool_call_id"]`, as
LlamaIndex's agents write them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole, TextBlock, ToolCallBlock
from llama_index.core.llms.llm import ToolSelection

from trt_gateway import types as t

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool


def request_fields(
    tools: Sequence[BaseTool], tool_required: bool, tool_choice: str | dict[str, Any] | None, parallel: bool
) -> dict[str, Any]:
    """The request fields of a chat with `tools`."""
    specs = [tool.metadata.to_openai_tool(skip_length_check=True) for tool in tools]
    if not specs:
        return {}
    return {"tools": specs, "tool_choice": _choice(tool_choice, tool_required), "parallel_tool_calls": parallel}


def _choice(choice: str | dict[str, Any] | None, required: bool) -> str:
    """LlamaIndex's tool_choice (None, "auto", "none", "required", a name, or OpenAI's {"function": {"name"}}) as the
    gateway's."""
    if choice is None:
        return "required" if required else "auto"
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else choice.get("name")
        return str(name or "")
    return choice


def assistant(text: str, calls: Sequence[t.ToolCall] = (), reasoning: str = "") -> ChatMessage:
    """The assistant's reply; its calls as `ToolCallBlock`s with their arguments parsed."""
    blocks: list[Any] = [TextBlock(text=text)] if text or not calls else []
    blocks.extend(ToolCallBlock(tool_call_id=c.id, tool_name=c.name, tool_kwargs=_arguments(c.arguments)) for c in calls)
    extra: dict[str, Any] = {}
    if calls:
        extra["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                               for c in calls]
    if reasoning:
        extra["reasoning_content"] = reasoning
    return ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks, additional_kwargs=extra)


def _arguments(text: str) -> dict[str, Any] | str:
    try:
        value = json.loads(text)
    except ValueError:
        return text  # the server returns only calls whose arguments parse; an older one may not
    return value if isinstance(value, dict) else text


def gateway_message(i: int, m: ChatMessage) -> dict[str, Any]:
    """One LlamaIndex message as the gateway client takes it: text, with an assistant turn's calls and a tool
    result's call id."""
    calls = [b for b in m.blocks if isinstance(b, ToolCallBlock)]
    others = [type(b).__name__ for b in m.blocks if not isinstance(b, (TextBlock, ToolCallBlock))]
    if others:
        raise ValueError(f"messages[{i}]: the gateway takes text only, not {sorted(set(others))}")
    role = m.role.value if isinstance(m.role, MessageRole) else str(m.role)
    text = "".join(b.text for b in m.blocks if isinstance(b, TextBlock))
    out: dict[str, Any] = {"role": role, "content": text}
    if calls:
        out["tool_calls"] = [
            {"id": c.tool_call_id or "", "type": "function",
             "function": {"name": c.tool_name, "arguments": c.tool_kwargs if isinstance(c.tool_kwargs, str)
                          else json.dumps(c.tool_kwargs, ensure_ascii=False)}}
            for c in calls
        ]
    elif m.additional_kwargs.get("tool_calls"):  # OpenAI-shaped calls, as other integrations keep them
        out["tool_calls"] = list(m.additional_kwargs["tool_calls"])
    call_id = m.additional_kwargs.get("tool_call_id")
    if call_id:
        out["tool_call_id"] = str(call_id)
    return out


def selections(response: ChatResponse, error_on_no_tool_call: bool) -> list[ToolSelection]:
    calls = [b for b in response.message.blocks if isinstance(b, ToolCallBlock)]
    if not calls and error_on_no_tool_call:
        raise ValueError("Expected at least one tool call, but got 0 tool calls.")
    return [
        ToolSelection(tool_id=c.tool_call_id or "", tool_name=c.tool_name,
                      tool_kwargs=c.tool_kwargs if isinstance(c.tool_kwargs, dict) else {})
        for c in calls
    ]


def only_first_call(response: ChatResponse) -> ChatResponse:
    """Without parallel calls: the first call of a reply (an "auto" reply may hold several) is the one kept."""
    calls = [b for b in response.message.blocks if isinstance(b, ToolCallBlock)]
    if len(calls) > 1:
        response.message.blocks = [b for b in response.message.blocks if not isinstance(b, ToolCallBlock)] + calls[:1]
        kept = response.message.additional_kwargs.get("tool_calls", [])[:1]
        response.message.additional_kwargs["tool_calls"] = kept
    return response
