"""Offline: tool binding, the forced-call schema, the tool prompt, reading replies (whole and streamed), the history
rendering, and the strict parser of guided JSON. Nothing here reaches a server."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration
from langchain_core.runnables import RunnableBinding
from langchain_core.tools import tool
from pydantic import BaseModel, Field
from pydantic.v1 import BaseModel as BaseModelV1

from langchain_trt_gateway import ChatTrtGateway
from langchain_trt_gateway._common import Piece
from langchain_trt_gateway._structured import GuidedJsonOutputParser
from langchain_trt_gateway._tools import ToolPlan, call_schema, format_tools, normalize_tool_choice
from langchain_trt_gateway.chat_models import _ToolStream, to_gateway_messages


class Weather(BaseModel):
    """Weather at a place."""

    city: str = Field(max_length=12)


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


NAMES = ["Weather", "add"]


def plan(choice: Any = None) -> ToolPlan:
    made = ToolPlan.from_kwargs([Weather, add], choice)
    assert made is not None
    return made


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, "auto"),
        ("auto", "auto"),
        ("none", "none"),
        (False, "none"),
        ("any", "required"),
        ("required", "required"),
        (True, "required"),
        ("add", "add"),
        ({"type": "function", "function": {"name": "Weather"}}, "Weather"),
    ],
)
def test_tool_choice_forms(choice: Any, expected: str) -> None:
    assert normalize_tool_choice(choice, NAMES) == expected


def test_bad_tool_choice_fails_at_bind_time() -> None:
    llm = ChatTrtGateway()
    with pytest.raises(ValueError, match="bound tool's name"):
        llm.bind_tools([Weather], tool_choice="nope")
    twice = ToolPlan.from_kwargs([add, Weather, add], "any")
    assert twice is not None and [t["function"]["name"] for t in twice.allowed()] == NAMES[::-1]
    with pytest.raises(ValueError, match="needs tools"):
        ToolPlan.from_kwargs([], "any")
    assert ToolPlan.from_kwargs(None, None) is None


def test_bind_tools_binds_openai_format_and_kwargs() -> None:
    bound = ChatTrtGateway().bind_tools([Weather, add], tool_choice="any", ls_structured_output_format={"x": 1})
    assert isinstance(bound, RunnableBinding)
    assert [t["function"]["name"] for t in bound.kwargs["tools"]] == NAMES
    assert bound.kwargs["tool_choice"] == "any" and bound.kwargs["ls_structured_output_format"] == {"x": 1}


def test_forced_call_schema() -> None:
    assert plan("auto").json_schema() is None and plan("none").json_schema() is None
    one = plan("add").json_schema()
    assert one is not None
    assert one["properties"]["name"] == {"type": "string", "enum": ["add"]}
    assert one["properties"]["arguments"]["required"] == ["a", "b"]
    assert one["required"] == ["name", "arguments"] and one["additionalProperties"] is False
    both = plan("any").json_schema()
    assert both is not None
    assert [b["properties"]["name"]["enum"] for b in both["anyOf"]] == [["Weather"], ["add"]]


def test_forced_call_schema_hoists_defs() -> None:
    params = {
        "type": "object",
        "properties": {"p": {"$ref": "#/$defs/P"}},
        "$defs": {"P": {"type": "object", "properties": {"q": {"$ref": "#/$defs/Q"}}}, "Q": {"type": "integer"}},
    }
    schema = call_schema([{"type": "function", "function": {"name": "t", "parameters": params}}])
    assert schema["$defs"] == {
        "t__P": {"type": "object", "properties": {"q": {"$ref": "#/$defs/t__Q"}}},
        "t__Q": {"type": "integer"},
    }
    assert schema["properties"]["arguments"]["properties"]["p"] == {"$ref": "#/$defs/t__P"}
    assert "$defs" not in schema["properties"]["arguments"]


def test_tools_are_described_in_the_system_message() -> None:
    template = "Tools:\n{tools}"
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    out = plan("auto").with_prompt(messages, template)
    assert out[0]["role"] == "system" and out[0]["content"].startswith("Be brief.\n\nTools:\n")
    lines = out[0]["content"].split("\n")[-2:]
    assert [json.loads(line)["name"] for line in lines] == NAMES
    assert json.loads(lines[1])["parameters"]["required"] == ["a", "b"]
    # A forced call by name describes that tool only; "none" and an empty template describe none.
    only = plan("add").with_prompt([{"role": "user", "content": "hi"}], template)
    assert only[0]["role"] == "system" and '"Weather"' not in only[0]["content"]
    assert plan("none").with_prompt(messages, template) == messages
    assert plan("auto").with_prompt(messages, "") == messages


@pytest.mark.parametrize(
    "reply",
    [
        '{"name": "add", "arguments": {"a": 1, "b": 2}}',
        '  ```json\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n```',
        '{"name": "add", "parameters": {"a": 1, "b": 2}}',
        '{"name": "add", "arguments": "{\\"a\\": 1, \\"b\\": 2}"}',
        '[{"name": "add", "arguments": {"a": 1, "b": 2}}]',
    ],
)
def test_auto_reply_that_is_a_call(reply: str) -> None:
    content, calls, invalid = plan("auto").parse(reply, "stop_token")
    assert content == "" and not invalid
    assert [(c["name"], c["args"]) for c in calls] == [("add", {"a": 1, "b": 2})]
    assert calls[0]["id"].startswith("call_")


@pytest.mark.parametrize(
    "reply",
    [
        "It is sunny.",
        '{"a": 1}',
        '{"name": "unknown", "arguments": {}}',
        '{"name": "add", "arguments": {"a": 1}, "extra": 1}',
        '{"name": "add", "arguments": {"a": 1',
        "[]",
    ],
)
def test_auto_reply_that_is_text(reply: str) -> None:
    assert plan("auto").parse(reply, "stop_token") == (reply, [], [])


def test_cut_forced_call_is_invalid() -> None:
    text = '{"name": "add", "arguments": {"a": 1'
    content, calls, invalid = plan("any").parse(text, "length")
    assert content == text and calls == []
    assert invalid[0]["args"] == text and "max_tokens" in (invalid[0]["error"] or "")


def _stream(plan_: ToolPlan | None, texts: list[str]) -> list[AIMessageChunk]:
    reader = _ToolStream(plan_)
    out = []
    for i, text in enumerate(texts):
        last = i == len(texts) - 1
        piece = Piece(text, {"finish_reason": "stop_token", "model_name": "m"} if last else None)
        out.append([c.message for c in reader.feed(piece)])
    return out  # type: ignore[return-value]


def test_stream_of_text_flows_and_of_a_call_is_held() -> None:
    text = _stream(plan("auto"), ["  ", "It", " is", " sunny"])
    assert [[m.content for m in step] for step in text] == [[], ["  It"], [" is"], [" sunny"]]
    call = _stream(plan("auto"), ['{"name": "add", ', '"arguments": {"a": 1, "b": 2}', "}"])
    assert [len(step) for step in call] == [0, 0, 1]
    (last,) = call[-1]
    assert last.content == "" and last.chunk_position == "last"
    assert [(c["name"], c["args"]) for c in last.tool_calls] == [("add", {"a": 1, "b": 2})]
    forced = _stream(plan("add"), ["Not", " JSON"])  # only a cut call can look like this
    assert [len(step) for step in forced] == [0, 1] and forced[-1][0].content == "Not JSON"
    plain = _stream(None, ['{"name": "add"', "}"])
    assert [m.content for step in plain for m in step] == ['{"name": "add"', "}"]


def test_history_with_tool_calls_and_results() -> None:
    call = {"name": "add", "args": {"a": 1, "b": 2}, "id": "c1", "type": "tool_call"}
    anthropic_style = [{"type": "text", "text": "Let me add."}, {"type": "tool_use", "id": "c1", "name": "add"}]
    history = [
        SystemMessage("sys"),
        HumanMessage("1 + 2?"),
        AIMessage(anthropic_style, tool_calls=[call]),
        ToolMessage("3", tool_call_id="c1", name="add"),
        ToolMessage("boom", tool_call_id="c2", name="add", status="error"),
    ]
    as_tool = to_gateway_messages(history)
    assert as_tool[2] == {"role": "assistant", "content": 'Let me add.\n{"name": "add", "arguments": {"a": 1, "b": 2}}'}
    assert as_tool[3] == {"role": "tool", "content": "3"}
    as_user = to_gateway_messages(history, tool_role="user")
    assert as_user[3] == {"role": "user", "content": "Result of tool add (call c1):\n3"}
    assert as_user[4] == {"role": "user", "content": "Result of tool add (call c2) failed:\nboom"}


def test_resolve_makes_guided_calls_greedy_unless_told() -> None:
    llm = ChatTrtGateway()
    assert llm._resolve(None, {"json_schema": {}}).params["temperature"] == 0
    assert llm._resolve(None, {"regex": "a+", "temperature": 0.3}).params["temperature"] == 0.3
    assert ChatTrtGateway(temperature=0.9)._resolve(None, {"choice": ["a"]}).params["temperature"] == 0.9
    assert "temperature" not in llm._resolve(None, {}).params


def test_prepare_adds_the_forced_schema_and_refuses_two_constraints() -> None:
    llm = ChatTrtGateway(model="m")
    tools = format_tools([add])
    call, prompt, made = llm._prepare([HumanMessage("hi")], None, {"tools": tools, "tool_choice": "any"})
    assert made is not None and call.params["json_schema"] == made.json_schema()
    assert call.params["temperature"] == 0 and prompt[0]["role"] == "system" and "add" in prompt[0]["content"]
    with pytest.raises(ValueError, match="cannot also use"):
        llm._prepare([HumanMessage("hi")], None, {"tools": tools, "tool_choice": "any", "regex": "x"})
    assert "tools" not in llm._get_ls_params(tools=tools, tool_choice="any")


class Pair(BaseModel):
    a: int
    b: str


class PairV1(BaseModelV1):
    a: int


def _gen(text: str, finish: str | None) -> ChatGeneration:
    md = {"finish_reason": finish} if finish else {}
    return ChatGeneration(message=AIMessage(text, response_metadata=md))


def test_guided_parser_is_strict_on_finished_output() -> None:
    parser = GuidedJsonOutputParser(pydantic_object=Pair)
    assert parser.parse_result([_gen('{"a": 1, "b": "x"}', "stop_token")]) == Pair(a=1, b="x")
    with pytest.raises(OutputParserException, match="cut off at max_tokens"):
        parser.parse_result([_gen('{"a": 1, "b": "x', "length")])
    with pytest.raises(OutputParserException, match="not complete JSON.*stop_string"):
        parser.parse_result([_gen('{"a": 1, "b": "x', "stop_string")])
    with pytest.raises(OutputParserException, match="does not validate as Pair"):
        parser.parse_result([_gen('{"a": 1}', "stop_token")])
    # While streaming: partial objects once they validate, None before.
    assert parser.parse_result([_gen('{"a": 1', None)], partial=True) is None
    assert parser.parse_result([_gen('{"a": 1, "b": "x', None)], partial=True) == Pair(a=1, b="x")
    # A finished stream is parsed strictly even in partial mode.
    with pytest.raises(OutputParserException, match="cut off"):
        parser.parse_result([_gen('{"a": 1, "b": "x', "length")], partial=True)
    assert GuidedJsonOutputParser(pydantic_object=PairV1).parse('{"a": 2}') == PairV1(a=2)
    assert GuidedJsonOutputParser().parse('{"a": [1]}') == {"a": [1]}
