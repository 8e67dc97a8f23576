"""`bind_tools` through the gateway's own tool support. On the demo model: forced calls are constrained by the
server's guided decoding, so they always parse and validate against the tool's arguments schema (whatever the tiny
model makes of the question); "auto" is unconstrained. On a scripted echo gateway: an "auto" call the server parses
out of the text, streamed content, the history sent as tool turns, and reasoning."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Literal

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field
from trt_gateway import errors
from trt_gateway.testing import API_KEY, LiveGateway, Recording, Scripted
from trt_gateway.types import ToolCall

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
    params: dict[str, object] = {"model": "demo", "max_tokens": 96, **kwargs}
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
    # A forced call is greedy (no temperature set), and the engine's greedy decoding does not depend on the prefix
    # cache: the second request reuses the first one's prompt blocks and still makes the same call.
    assert streamed["args"] == done["args"]
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
    assert full is not None and not full.tool_calls and full.content == message.content  # greedy: the same cut text


def test_forced_calls_are_greedy_unless_told(scripted: tuple[str, Scripted]) -> None:
    # Regression: a forced call went out without a temperature, so the server sampled it at 1 with a seed the engine
    # draws per request; in the full suite the same prompt then picked CET once and UTC the next time.
    target, executor = scripted
    llm = ChatTrtGateway(target=target, model="scripted", api_key=API_KEY, max_tokens=32)
    for choice in ("any", "get_time"):
        llm.bind_tools([get_time], tool_choice=choice).invoke("What time is it?")
        assert executor.requests[-1].sampling.temperature == 0
    llm.bind_tools([get_time], tool_choice="any", temperature=0.7).invoke("What time is it?")
    assert executor.requests[-1].sampling.temperature == pytest.approx(0.7)
    llm.bind_tools([get_time]).invoke("What time is it?")  # auto: unconstrained, the server's default
    assert executor.requests[-1].sampling.temperature == 1.0


def test_forced_call_and_structured_output_do_not_mix() -> None:
    llm = demo().bind_tools([ping], tool_choice="any")
    with pytest.raises(errors.InvalidArgument, match="cannot be combined with guided.json_schema"):
        llm.invoke("x", json_schema={"type": "object"})


# -- the server parses "auto" calls: a scripted echo gateway --------------------------------------------------------

SCRIPT = '<think>The clock tool.</think>Checking.<tool_call>{"name": "get_time", "arguments": {"zone": "CET"}}</tool_call>'


@pytest.fixture(scope="module")
def echo() -> Iterator[tuple[str, Recording]]:
    executor = Recording(SCRIPT)
    with LiveGateway(executor, server={"reasoning_parser": "qwen3", "stream_coalesce_tokens": 1}) as target:
        yield target, executor


def test_auto_call_parsed_by_the_server(echo: tuple[str, Recording]) -> None:
    target, executor = echo
    llm = ChatTrtGateway(target=target, model="echo", max_tokens=300).bind_tools([get_time, ping])
    message = llm.invoke("What time is it?")
    assert isinstance(message, AIMessage) and message.content == "Checking."
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("get_time", {"zone": "CET"})]
    assert message.tool_calls[0]["id"].startswith("call_")  # type: ignore[union-attr]
    assert message.additional_kwargs["reasoning_content"] == "The clock tool."
    sent = executor.requests[-1]
    assert [t.name for t in sent.tools] == ["get_time", "ping"] and sent.tool_choice == "auto"
    assert "get_time" not in str(sent.prompt.messages)  # no client-side tool prompt: the server renders the tools

    chunks = list(llm.stream("What time is it?"))
    assert sum(1 for c in chunks if c.content) > 2  # the content streams as the server releases it
    full = chunks[0]
    for c in chunks[1:]:
        full = full + c
    assert isinstance(full, AIMessageChunk) and full.content == "Checking."
    assert [(c["name"], c["args"]) for c in full.tool_calls] == [("get_time", {"zone": "CET"})]
    assert full.additional_kwargs["reasoning_content"] == "The clock tool."


def test_history_goes_to_the_server_as_tool_turns(echo: tuple[str, Recording]) -> None:
    target, executor = echo
    llm = ChatTrtGateway(target=target, model="echo", max_tokens=8).bind_tools([get_time], tool_choice="none")
    call = {"name": "get_time", "args": {"zone": "UTC"}, "id": "call_7", "type": "tool_call"}
    history = [HumanMessage("Time?"), AIMessage("", tool_calls=[call]), ToolMessage("12:00", tool_call_id="call_7")]
    answer = llm.invoke(history)
    assert not answer.tool_calls  # type: ignore[attr-defined]  # tool_choice none: the text is content
    sent = executor.requests[-1].prompt.messages
    assert sent is not None and [m.role for m in sent] == ["user", "assistant", "tool"]
    assert sent[1].tool_calls == (ToolCall("call_7", "get_time", '{"zone": "UTC"}'),)
    assert sent[2].tool_call_id == "call_7" and sent[2].content == "12:00"


async def test_auto_call_async(echo: tuple[str, Recording]) -> None:
    target, _ = echo
    llm = ChatTrtGateway(target=target, model="echo", max_tokens=300).bind_tools([get_time])
    message = await llm.ainvoke("What time is it?")
    assert [c["name"] for c in message.tool_calls] == ["get_time"]  # type: ignore[attr-defined]
    full = None
    async for chunk in llm.astream("What time is it?"):
        full = chunk if full is None else full + chunk
    assert full is not None and [c["args"] for c in full.tool_calls] == [{"zone": "CET"}]  # type: ignore[attr-defined]
