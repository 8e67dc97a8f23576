"""`bind_tools` on the demo model: forced calls are constrained by guided decoding, so they always parse and validate
against the tool's arguments schema (whatever the tiny model makes of the question); "auto" is unconstrained."""

from __future__ import annotations

import asyncio
from typing import Literal

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field
from trt_gateway import errors

from langchain_trt_gateway import ChatTrtGateway


class BookTrip(BaseModel):
    """Book a trip to a city."""

    city: Literal["Paris", "Zürich", "東京"]
    days: int = Field(ge=1, le=14)
    note: str = Field(default="", max_length=8)


@tool
def get_time(zone: Literal["UTC", "CET", "JST"]) -> str:
    """The current time in a time zone."""
    return "12:00"


@tool
def ping() -> str:
    """Check that the service is up."""
    return "pong"


@tool
def greet(name: Literal["山田", "你好"]) -> str:
    """Greet someone by name."""
    return f"hi {name}"


ARGS = {"BookTrip": BookTrip, **{t.name: t.args_schema for t in (get_time, ping, greet)}}


def demo(**kwargs: object) -> ChatTrtGateway:
    params: dict[str, object] = {"model": "demo", "max_tokens": 96, "tool_role": "user", **kwargs}
    return ChatTrtGateway(**params)  # type: ignore[arg-type]


def check_call(message: BaseMessage, allowed: set[str]) -> dict:
    assert isinstance(message, AIMessage)
    assert message.content == "" and not message.invalid_tool_calls, message
    (call,) = message.tool_calls
    assert call["name"] in allowed and call["type"] == "tool_call"
    assert isinstance(call["id"], str) and call["id"].startswith("call_")
    ARGS[call["name"]].model_validate(call["args"])  # type: ignore[union-attr]
    blocks = [b for b in message.content_blocks if b["type"] == "tool_call"]
    assert len(blocks) == 1 and blocks[0]["name"] == call["name"] and blocks[0]["args"] == call["args"]
    return call


async def test_forced_calls_are_valid_for_every_seed() -> None:
    tools = [BookTrip, get_time, ping]

    async def one(seed: int) -> BaseMessage:
        llm = demo(temperature=0.7, seed=seed).bind_tools(tools, tool_choice="any")
        return await llm.ainvoke("Plan a short trip, please.")

    messages = await asyncio.gather(*(one(s) for s in range(12)))
    calls = [check_call(m, {"BookTrip", "get_time", "ping"}) for m in messages]
    assert len({c["id"] for c in calls}) == len(calls)


def test_forced_by_name_invoke_and_stream() -> None:
    llm = demo().bind_tools([BookTrip, get_time], tool_choice="get_time")
    done = check_call(llm.invoke("What time is it in Tokyo?"), {"get_time"})
    chunks = list(llm.stream("What time is it in Tokyo?"))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    full = chunks[0]
    for c in chunks[1:]:
        full = full + c
    streamed = check_call(full, {"get_time"})
    assert streamed["args"] == done["args"]  # greedy: the same call either way
    assert full.usage_metadata is not None and full.response_metadata["finish_reason"] == "stop_token"


async def test_forced_no_argument_tool_async_stream() -> None:
    llm = demo().bind_tools([ping], tool_choice=True)
    message = await llm.ainvoke("Is it up?")
    assert check_call(message, {"ping"})["args"] == {}
    full = None
    async for chunk in llm.astream("Is it up?"):
        full = chunk if full is None else full + chunk
    assert full is not None and check_call(full, {"ping"})["args"] == {}


def test_non_ascii_arguments_survive() -> None:
    call = check_call(demo().bind_tools([greet], tool_choice="greet").invoke("Greet them."), {"greet"})
    assert call["args"]["name"] in {"山田", "你好"}


def test_tool_round_trip_in_history() -> None:
    llm = demo(max_tokens=8)
    tools = llm.bind_tools([get_time])
    first = demo().bind_tools([get_time], tool_choice="any").invoke("What time is it?")
    (call,) = first.tool_calls
    result = get_time.invoke(call)
    assert isinstance(result, ToolMessage) and result.tool_call_id == call["id"]
    answer = tools.invoke([HumanMessage("What time is it?"), first, result])
    assert isinstance(answer, AIMessage) and answer.usage_metadata is not None
    # The prompt holds the tool description, the earlier call and the result: far longer than the question.
    assert answer.usage_metadata["input_tokens"] > 60


def test_tool_role_must_be_one_the_template_knows() -> None:
    history = [HumanMessage("t?"), AIMessage("", tool_calls=[{"name": "ping", "args": {}, "id": "c1"}])]
    history.append(ToolMessage("pong", tool_call_id="c1", name="ping"))
    with pytest.raises(errors.InvalidArgument, match="Unknown role: tool"):
        demo(tool_role="tool").bind_tools([ping]).invoke(history)


def test_auto_answers_in_text() -> None:
    # Unconstrained: the demo model does not choose to call a tool, and its text reply is not mistaken for a call.
    message = demo(temperature=0, max_tokens=16).bind_tools([get_time, ping]).invoke("Hello!")
    assert isinstance(message, AIMessage) and message.content and not message.tool_calls
    none = demo(temperature=0, max_tokens=16).bind_tools([get_time], tool_choice="none").invoke("Hello!")
    assert none.content and not none.tool_calls


def test_cut_forced_call_is_invalid_not_repaired() -> None:
    llm = demo(max_tokens=10).bind_tools([BookTrip], tool_choice="any")
    message = llm.invoke("Book it.")
    assert not message.tool_calls and message.response_metadata["finish_reason"] == "length"
    (invalid,) = message.invalid_tool_calls
    assert "max_tokens" in (invalid["error"] or "") and invalid["args"] == message.content
    full = None
    for chunk in llm.stream("Book it."):
        full = chunk if full is None else full + chunk
    assert full is not None and not full.tool_calls and full.content == message.content


def test_forced_call_and_structured_output_do_not_mix() -> None:
    llm = demo().bind_tools([ping], tool_choice="any")
    with pytest.raises(ValueError, match="cannot also use"):
        llm.invoke("x", json_schema={"type": "object"})
