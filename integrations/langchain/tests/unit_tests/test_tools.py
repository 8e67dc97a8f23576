"""Offline: tool binding, tool_choice forms, reading the server's calls (whole and streamed), the history sent to the
server, and the strict parser of guided JSON. Nothing here reaches a server."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration
from langchain_core.runnables import RunnableBinding
from langchain_core.tools import tool
from pydantic import BaseModel, Field
from pydantic.v1 import BaseModel as BaseModelV1
from trt_gateway import types as t

from langchain_trt_gateway import ChatTrtGateway
from langchain_trt_gateway._common import Piece
from langchain_trt_gateway._structured import GuidedJsonOutputParser
from langchain_trt_gateway._tools import ToolPlan, format_tools, normalize_tool_choice
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
    with pytest.raises(ValueError, match="needs tools"):
        ToolPlan.from_kwargs([], "any")
    assert ToolPlan.from_kwargs(None, None) is None


def test_bind_tools_binds_openai_format_and_kwargs() -> None:
    bound = ChatTrtGateway().bind_tools([Weather, add], tool_choice="any", ls_structured_output_format={"x": 1})
    assert isinstance(bound, RunnableBinding)
    assert [t["function"]["name"] for t in bound.kwargs["tools"]] == NAMES
    assert bound.kwargs["tool_choice"] == "any" and bound.kwargs["ls_structured_output_format"] == {"x": 1}


def test_server_calls_become_langchain_calls() -> None:
    calls = (t.ToolCall("call_1", "add", '{"a": 1, "b": 2}'), t.ToolCall("call_2", "add", "{not json"))
    content, good, bad = plan("auto").read("", calls, "stop_token")
    assert content == "" and [(c["name"], c["args"], c["id"]) for c in good] == [("add", {"a": 1, "b": 2}, "call_1")]
    assert [(c["name"], c["id"]) for c in bad] == [("add", "call_2")]
    assert plan("auto").read("It is sunny.", (), "stop_token") == ("It is sunny.", [], [])


def test_cut_forced_call_is_invalid() -> None:
    text = '{"a": 1'  # the server returns a forced call that did not complete as content
    content, calls, invalid = plan("any").read(text, (), "length")
    assert content == text and calls == []
    assert invalid[0]["args"] == text and "max_tokens" in (invalid[0]["error"] or "")


def _stream(plan_: ToolPlan | None, texts: list[str], calls: tuple[t.ToolCall, ...] = ()) -> list[list[AIMessageChunk]]:
    reader = _ToolStream(plan_)
    out = []
    for i, text in enumerate(texts):
        last = i == len(texts) - 1
        md = {"finish_reason": "stop_token", "model_name": "m"} if last else None
        out.append([c.message for c in reader.feed(Piece(text, md, tool_calls=calls if last else ()))])
    return out  # type: ignore[return-value]


def test_stream_flows_and_the_calls_come_last() -> None:
    text = _stream(plan("auto"), ["It", " is", " sunny", ""])
    assert [[m.content for m in step] for step in text] == [["It"], [" is"], [" sunny"], [""]]
    call = _stream(plan("auto"), ["Let me add.", ""], (t.ToolCall("call_9", "add", '{"a": 1, "b": 2}'),))
    (last,) = call[-1]
    assert last.chunk_position == "last"
    assert [(c["name"], c["args"], c["id"]) for c in last.tool_calls] == [("add", {"a": 1, "b": 2}, "call_9")]


def test_history_with_tool_calls_and_results() -> None:
    call = {"name": "add", "args": {"a": 1, "b": 2}, "id": "c1", "type": "tool_call"}
    anthropic_style = [{"type": "text", "text": "Let me add."}, {"type": "tool_use", "id": "c1", "name": "add"}]
    history = [
        SystemMessage("sys"),
        HumanMessage("1 + 2?"),
        AIMessage(anthropic_style, tool_calls=[call]),
        ToolMessage("3", tool_call_id="c1", name="add"),
    ]
    out = to_gateway_messages(history)
    assert out[2] == {"role": "assistant", "content": "Let me add.", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}]}
    assert out[3] == {"role": "tool", "content": "3", "tool_call_id": "c1"}


def test_resolve_makes_guided_calls_greedy_unless_told() -> None:
    llm = ChatTrtGateway()
    assert llm._resolve(None, {"json_schema": {}}).params["temperature"] == 0
    assert llm._resolve(None, {"regex": "a+", "temperature": 0.3}).params["temperature"] == 0.3
    assert ChatTrtGateway(temperature=0.9)._resolve(None, {"choice": ["a"]}).params["temperature"] == 0.9
    assert "temperature" not in llm._resolve(None, {}).params


@pytest.mark.parametrize("choice", ["any", True, "add", {"type": "function", "function": {"name": "add"}}])
def test_forced_tool_calls_are_greedy_unless_told(choice: Any) -> None:
    # The server guides a forced call; left at its default temperature (1) with an engine-drawn seed, the same call
    # picked different arguments from one request to the next (seen as CET vs UTC in the LangChain suite).
    llm = ChatTrtGateway(model="m")
    forced = {"tools": format_tools([add]), "tool_choice": choice}
    assert llm._prepare([HumanMessage("hi")], None, dict(forced))[0].params["temperature"] == 0
    assert llm._prepare([HumanMessage("hi")], None, {**forced, "temperature": 0.4})[0].params["temperature"] == 0.4
    for unforced in ("auto", "none", None):
        call = llm._prepare([HumanMessage("hi")], None, {**forced, "tool_choice": unforced})[0]
        assert "temperature" not in call.params


def test_prepare_sends_the_tools_to_the_server() -> None:
    llm = ChatTrtGateway(model="m")
    tools = format_tools([add])
    call, prompt, made = llm._prepare([HumanMessage("hi")], None, {"tools": tools, "tool_choice": "any"})
    assert made is not None and call.params["tools"] == tools and call.params["tool_choice"] == "required"
    assert prompt == [{"role": "user", "content": "hi"}]  # no client-side tool prompt
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
