"""TrtGateway as a FunctionCallingLLM on the gateway's own tools: an "auto" call the server parses out of a
scripted echo reply (chat_with_tools, streamed and async, predict_and_call), the history sent as tool turns, and a
forced call on the demo model, constrained by the server's guided decoding so it validates."""

import json
from collections.abc import Iterator
from typing import Literal

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock, ToolCallBlock
from llama_index.core.tools import FunctionTool
from trt_gateway.testing import API_KEY, LiveGateway, Recording, Scripted
from trt_gateway.types import ToolCall

from llama_index.llms.trt_gateway import TrtGateway

SCRIPT = ('<think>Use the weather tool.</think>Looking.'
          '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>')


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def get_time(zone: Literal["UTC", "CET", "JST"]) -> str:
    """The current time in a time zone."""
    return f"12:00 {zone}"


WEATHER = FunctionTool.from_defaults(fn=get_weather)
TIME = FunctionTool.from_defaults(fn=get_time)


@pytest.fixture(scope="module")
def echo() -> Iterator[tuple[TrtGateway, Recording]]:
    executor = Recording(SCRIPT)
    with LiveGateway(executor, server={"reasoning_parser": "qwen3"}) as target:
        yield TrtGateway(target=target, model="echo", max_tokens=300), executor


def test_chat_with_tools_and_predict_and_call(echo: tuple[TrtGateway, Recording]) -> None:
    llm, executor = echo
    assert llm.metadata.is_function_calling_model
    response = llm.chat_with_tools([WEATHER, TIME], user_msg="Weather in Paris?")
    assert response.message.content == "Looking."
    assert response.message.additional_kwargs["reasoning_content"] == "Use the weather tool."
    (selection,) = llm.get_tool_calls_from_response(response)
    assert (selection.tool_name, selection.tool_kwargs) == ("get_weather", {"city": "Paris"})
    assert selection.tool_id.startswith("call_")
    sent = executor.requests[-1]
    assert [t.name for t in sent.tools] == ["get_weather", "get_time"] and sent.tool_choice == "auto"
    assert not sent.parallel_tool_calls
    assert str(llm.predict_and_call([WEATHER], user_msg="Weather in Paris?")) == "sunny in Paris"


def test_stream_chat_with_tools(echo: tuple[TrtGateway, Recording]) -> None:
    llm, _ = echo
    responses = list(llm.stream_chat_with_tools([WEATHER], user_msg="Weather?"))
    assert len(responses) > 2 and responses[-1].message.content == "Looking."
    assert [s.tool_kwargs for s in llm.get_tool_calls_from_response(responses[-1])] == [{"city": "Paris"}]
    assert llm.get_tool_calls_from_response(responses[0], error_on_no_tool_call=False) == []
    with pytest.raises(ValueError, match="Expected at least one tool call"):
        llm.get_tool_calls_from_response(responses[0])


async def test_async_chat_with_tools(echo: tuple[TrtGateway, Recording]) -> None:
    llm, _ = echo
    response = await llm.achat_with_tools([WEATHER], user_msg="Weather?")
    assert [s.tool_name for s in llm.get_tool_calls_from_response(response)] == ["get_weather"]
    output = await llm.apredict_and_call([WEATHER], user_msg="Weather?")
    assert str(output) == "sunny in Paris"
    responses = [r async for r in await llm.astream_chat_with_tools([WEATHER], user_msg="Weather?")]
    last = responses[-1]
    assert llm.get_tool_calls_from_response(last)[0].tool_kwargs == {"city": "Paris"}


def test_history_goes_to_the_server_as_tool_turns(echo: tuple[TrtGateway, Recording]) -> None:
    llm, executor = echo
    call = ToolCallBlock(tool_call_id="call_3", tool_name="get_weather", tool_kwargs={"city": "Lima"})
    history = [
        ChatMessage(role=MessageRole.USER, content="Weather in Lima?"),
        ChatMessage(role=MessageRole.ASSISTANT, blocks=[TextBlock(text="Checking."), call]),
        ChatMessage(role=MessageRole.TOOL, content="sunny in Lima", additional_kwargs={"tool_call_id": "call_3"}),
    ]
    llm.chat_with_tools([WEATHER], chat_history=history, tool_choice="none")
    sent = executor.requests[-1].prompt.messages
    assert sent is not None and [m.role for m in sent] == ["user", "assistant", "tool"]
    assert sent[1].content == "Checking." and sent[1].tool_calls == (ToolCall("call_3", "get_weather", '{"city": "Lima"}'),)
    assert sent[2].tool_call_id == "call_3"


def test_forced_call_on_the_demo_model_validates() -> None:
    llm = TrtGateway(model="demo", temperature=0, max_tokens=64)
    response = llm.chat_with_tools([TIME, WEATHER], user_msg="What time is it in Tokyo?", tool_required=True)
    (selection,) = llm.get_tool_calls_from_response(response)
    assert selection.tool_name in {"get_time", "get_weather"}
    if selection.tool_name == "get_time":
        assert selection.tool_kwargs["zone"] in {"UTC", "CET", "JST"}
    named = llm.chat_with_tools([TIME, WEATHER], user_msg="Time?", tool_choice="get_time")
    (forced,) = llm.get_tool_calls_from_response(named)
    assert forced.tool_name == "get_time" and forced.tool_kwargs["zone"] in {"UTC", "CET", "JST"}
    assert json.loads(named.message.additional_kwargs["tool_calls"][0]["function"]["arguments"]) == forced.tool_kwargs



def test_forced_calls_are_greedy_unless_told(scripted: tuple[str, Scripted]) -> None:
    """Regression: a forced call (tool_choice "required" or a tool's name) went out with no temperature, so the
    server sampled it at 1.0, seeded by the engine in arrival order: the same prompt gave different arguments."""
    target, executor = scripted
    llm = TrtGateway(target=target, model="scripted", api_key=API_KEY, max_tokens=32)
    for choice in ("required", "get_weather"):
        llm.chat_with_tools([WEATHER], user_msg="Weather in Paris?", tool_choice=choice)
        assert executor.requests[-1].sampling.temperature == 0
    told = TrtGateway(target=target, model="scripted", api_key=API_KEY, max_tokens=32, temperature=0.7)
    told.chat_with_tools([WEATHER], user_msg="Weather in Paris?", tool_choice="required")
    assert executor.requests[-1].sampling.temperature == pytest.approx(0.7)
    llm.chat_with_tools([WEATHER], user_msg="Weather in Paris?")  # auto: unconstrained, the server's default
    assert executor.requests[-1].sampling.temperature == 1.0
