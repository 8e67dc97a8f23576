"""Tool calling through the gateway: the OpenAI SDK and LangChain's ChatOpenAI.bind_tools over HTTP, the gRPC
stream's last chunk, forced calls constrained on the real demo model, and bad tool definitions refused by field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import openai
import pytest
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from trt_gateway.executors.echo import EchoExecutor
from trt_gateway.executors.native import NativeExecutor
from trt_gateway.testing import LiveGateway
from trt_gateway.v1 import gateway_pb2 as pb
from trt_gateway.v1 import gateway_pb2_grpc as pb_grpc

SCRIPT = 'Checking.<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
USER = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture(scope="module")
def echo() -> Iterator[LiveGateway]:
    with (gateway := LiveGateway(EchoExecutor({"script": SCRIPT}), server={"http": True, "http_port": 0})):
        yield gateway


@pytest.fixture(scope="module")
def client(echo: LiveGateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"http://127.0.0.1:{echo.server.http_port}/v1", api_key="x", max_retries=0) as c:
        yield c


def test_sdk_tool_call(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="echo", messages=USER, tools=[WEATHER], max_tokens=200)  # type: ignore[list-item]
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Checking."
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    # without tools, or with tool_choice none, the same text is plain content
    plain = client.chat.completions.create(model="echo", messages=USER, max_tokens=200)
    assert plain.choices[0].message.content == SCRIPT and plain.choices[0].message.tool_calls is None
    off = client.chat.completions.create(model="echo", messages=USER, tools=[WEATHER], tool_choice="none",  # type: ignore[list-item]
                                         max_tokens=200)
    assert off.choices[0].message.content == SCRIPT


def test_sdk_tool_call_streamed(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="echo", messages=USER, tools=[WEATHER], max_tokens=200,  # type: ignore[list-item]
                                                 stream=True))
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert content == "Checking."  # no fragment of the call ever reached the content
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert [(tc.index, tc.function.name) for tc in calls] == [(0, "get_weather")]  # type: ignore[union-attr]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_history_with_calls_and_results(client: openai.OpenAI) -> None:
    history = [*USER, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    r = client.chat.completions.create(model="echo", messages=history, tools=[WEATHER], max_tokens=200)  # type: ignore[arg-type, list-item]
    assert r.choices[0].message.tool_calls is not None


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].name"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "other"}}}, "tool_choice"),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        ({"messages": [{"role": "assistant", "tool_calls": [{"id": "1", "type": "function", "function": {
            "name": "get_weather", "arguments": "{not json"}}]}]}, "messages[0].tool_calls[0].arguments"),
    ],
)
def test_bad_tools_are_400_naming_the_field(client: openai.OpenAI, kwargs: dict, param: str) -> None:
    args = {"model": "echo", "messages": USER, **kwargs}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(**args)
    assert err.value.body["param"] == param  # type: ignore[index]


def test_langchain_bind_tools(echo: LiveGateway) -> None:
    @tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        return "sunny"

    llm = ChatOpenAI(base_url=f"http://127.0.0.1:{echo.server.http_port}/v1", api_key="x", model="echo",
                     max_tokens=200, max_retries=0).bind_tools([get_weather])
    reply = llm.invoke("Weather in Paris?")
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("get_weather", {"city": "Paris"})]


def test_grpc_stream_carries_tool_calls(echo: LiveGateway) -> None:
    request = pb.GenerateRequest(
        messages=[pb.ChatMessage(role="user", content="hi")],
        tools=[pb.Tool(name="get_weather", parameters=json.dumps(WEATHER["function"]["parameters"]))],
        stopping=pb.StoppingCriteria(max_tokens=200),
    )
    with grpc.insecure_channel(f"127.0.0.1:{echo.server.port}") as channel:
        chunks = list(pb_grpc.GatewayStub(channel).GenerateStream(request))
        whole = pb_grpc.GatewayStub(channel).Generate(request)
    assert "".join(c.text for c in chunks) == "Checking."
    assert [tc.name for tc in chunks[-1].tool_calls] == ["get_weather"] and not any(c.tool_calls for c in chunks[:-1])
    assert whole.outputs[0].text == "Checking." and json.loads(whole.outputs[0].tool_calls[0].arguments) == {
        "city": "Paris"}


def test_forced_call_on_the_real_model_always_parses() -> None:
    demo = Path(__file__).resolve().parents[2] / "trt_gateway" / "assets" / "demo" / "target"
    gateway = LiveGateway(NativeExecutor(demo, options={"device": "cpu"}), server={"http": True, "http_port": 0})
    with gateway, openai.OpenAI(base_url=f"http://127.0.0.1:{gateway.server.http_port}/v1", api_key="x",
                                max_retries=0) as c:
        named = c.chat.completions.create(
            model="demo", messages=USER, tools=[WEATHER], max_tokens=64, temperature=0,  # type: ignore[list-item]
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        )
        required = c.chat.completions.create(model="demo", messages=USER, tools=[WEATHER], max_tokens=64,  # type: ignore[list-item]
                                             temperature=0, tool_choice="required")
    for r in (named, required):
        if r.choices[0].finish_reason == "length":  # a tiny model may ramble inside a string until max_tokens
            continue
        (call,) = r.choices[0].message.tool_calls or []
        assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments)["city"], str)
    assert any(r.choices[0].finish_reason == "tool_calls" for r in (named, required))


async def test_python_clients_send_tools_and_get_calls(echo: LiveGateway) -> None:
    from trt_gateway import AsyncGatewayClient, GatewayClient
    from trt_gateway.client import Tool

    target = f"127.0.0.1:{echo.server.port}"
    history = [{"role": "user", "content": "Weather?"},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "rain"}]
    with GatewayClient(target) as client:
        done = client.generate(messages=history, tools=[WEATHER], max_tokens=200)
        assert done.text == "Checking." and [c.name for c in done.tool_calls] == ["get_weather"]
        assert done.outputs[0].tool_calls == done.tool_calls
    async with AsyncGatewayClient(target) as aclient, aclient.stream(
        messages=USER, tools=[Tool("get_weather", parameters=json.dumps(WEATHER["function"]["parameters"]))],
        max_tokens=200,
    ) as stream:
        chunks = [c async for c in stream]
    assert json.loads(chunks[-1].tool_calls[0].arguments) == {"city": "Paris"}
    with GatewayClient(target) as client, pytest.raises(TypeError, match="tools\\[0\\]"):
        client.generate(messages=USER, tools=["get_weather"])  # type: ignore[list-item]
