"""Reasoning output (`server.reasoning_parser`) through the real gateway on loopback: the official openai SDK over
HTTP (message.reasoning_content / delta.reasoning_content, as vLLM serves them) and the Python gRPC client
(Output.reasoning / StreamChunk.reasoning). The echo executor writes its script one byte per delta, so every tag
reaches the parser cut into pieces."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest

from trt_gateway import GatewayClient
from trt_gateway.executors.echo import EchoExecutor
from trt_gateway.testing import LiveGateway

THINKING = "<think>The user wants the weather.</think>It is sunny."
OPENED = "The user wants the weather.</think>It is sunny."  # the template opened the block: no <think> in the output
CALL = '<think>I need a tool.</think><tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
USER = [{"role": "user", "content": "Weather?"}]


@pytest.fixture(scope="module")
def gateways() -> Iterator[dict[str, tuple[str, openai.OpenAI]]]:
    """One gateway per (parser, script): qwen3 / deepseek_r1 / none."""
    specs = {"qwen3": ("qwen3", THINKING), "qwen3-opened": ("qwen3", OPENED), "r1": ("deepseek_r1", OPENED),
             "none": (None, THINKING), "tools": ("qwen3", CALL)}
    running: dict[str, tuple[str, openai.OpenAI]] = {}
    stack = []
    try:
        for key, (fmt, script) in specs.items():
            live = LiveGateway(EchoExecutor({"script": script}),
                               server={"http": True, "http_port": 0, "reasoning_parser": fmt,
                                       "stream_coalesce_tokens": 1})
            target = live.__enter__()
            stack.append(live)
            sdk = openai.OpenAI(base_url=f"http://127.0.0.1:{live.server.http_port}/v1", api_key="x", max_retries=0)
            running[key] = (target, sdk)
        yield running
    finally:
        for _, sdk in running.values():
            sdk.close()
        for live in reversed(stack):
            live.__exit__(None, None, None)


def _streamed(sdk: openai.OpenAI, **kw: object) -> tuple[str, str, list[object]]:
    chunks = list(sdk.chat.completions.create(model="echo", stream=True, max_tokens=300, **kw))  # type: ignore[call-overload]
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    thought = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
    return thought, "".join(d.content or "" for d in deltas), chunks


def test_sdk_reasoning_content(gateways: dict[str, tuple[str, openai.OpenAI]]) -> None:
    _, sdk = gateways["qwen3"]
    message = sdk.chat.completions.create(model="echo", messages=USER, max_tokens=300).choices[0].message  # type: ignore[arg-type]
    assert message.content == "It is sunny."
    assert message.model_extra is not None and message.model_extra["reasoning_content"] == "The user wants the weather."


def test_sdk_reasoning_streamed_with_tags_cut_across_deltas(gateways: dict[str, tuple[str, openai.OpenAI]]) -> None:
    _, sdk = gateways["qwen3"]
    thought, content, chunks = _streamed(sdk, messages=USER)
    assert (thought, content) == ("The user wants the weather.", "It is sunny.")
    assert len(chunks) > 20  # one byte a delta: the tags really were cut
    assert not any("<" in (c.choices[0].delta.content or "") for c in chunks if c.choices)  # type: ignore[attr-defined]


def test_block_opened_by_the_prompt_is_read_from_the_rendered_prompt(
    gateways: dict[str, tuple[str, openai.OpenAI]],
) -> None:
    target, sdk = gateways["qwen3-opened"]
    # The echo template renders "user: <content>\nassistant: ", so a user turn ending in <think> leaves the
    # rendered prompt inside an open block, as a thinking model's template does.
    opened = [{"role": "user", "content": "Weather? <think>"}]
    assert _streamed(sdk, messages=opened)[:2] == ("The user wants the weather.", "It is sunny.")
    message = sdk.chat.completions.create(model="echo", messages=opened, max_tokens=300).choices[0].message  # type: ignore[arg-type]
    assert message.content == "It is sunny." and message.model_extra["reasoning_content"]  # type: ignore[index]
    # A prompt that does not open the block: the output is content, untouched.
    plain = sdk.chat.completions.create(model="echo", messages=USER, max_tokens=300).choices[0].message  # type: ignore[arg-type]
    assert plain.content == OPENED and "reasoning_content" not in (plain.model_extra or {})
    # The rendered prompt was fetched for the parser only: a caller that did not ask for it does not get it.
    with GatewayClient(target) as client:
        done = client.generate(messages=opened, max_tokens=300)
    assert done.prompt is None and (done.reasoning, done.text) == ("The user wants the weather.", "It is sunny.")


def test_deepseek_r1_starts_inside_the_block(gateways: dict[str, tuple[str, openai.OpenAI]]) -> None:
    _, sdk = gateways["r1"]
    assert _streamed(sdk, messages=USER)[:2] == ("The user wants the weather.", "It is sunny.")
    cut = sdk.chat.completions.create(model="echo", messages=USER, max_tokens=8).choices[0]  # type: ignore[arg-type]
    assert cut.finish_reason == "length" and cut.message.content == ""  # cut short while thinking: all reasoning
    assert cut.message.model_extra["reasoning_content"] == OPENED[:8]  # type: ignore[index]


def test_no_parser_leaves_the_text_untouched(gateways: dict[str, tuple[str, openai.OpenAI]]) -> None:
    target, sdk = gateways["none"]
    message = sdk.chat.completions.create(model="echo", messages=USER, max_tokens=300).choices[0].message  # type: ignore[arg-type]
    assert message.content == THINKING and "reasoning_content" not in (message.model_extra or {})
    thought, content, _ = _streamed(sdk, messages=USER)
    assert (thought, content) == ("", THINKING)
    with GatewayClient(target) as client:
        assert (client.generate(messages=USER).reasoning, client.generate(messages=USER).text) == ("", THINKING)


def test_text_completions_keep_the_text_whole(gateways: dict[str, tuple[str, openai.OpenAI]]) -> None:
    _, sdk = gateways["qwen3"]
    assert sdk.completions.create(model="echo", prompt="x", max_tokens=300).choices[0].text == THINKING


def test_grpc_client_reasoning(gateways: dict[str, tuple[str, openai.OpenAI]]) -> None:
    target, _ = gateways["qwen3"]
    with GatewayClient(target) as client:
        done = client.generate(messages=USER, max_tokens=300)
        assert (done.reasoning, done.text) == ("The user wants the weather.", "It is sunny.")
        assert done.outputs[0].reasoning == done.reasoning
        chunks = list(client.stream(messages=USER, max_tokens=300))
    assert "".join(c.reasoning for c in chunks) == "The user wants the weather."
    assert "".join(c.text for c in chunks) == "It is sunny."
    assert sum(1 for c in chunks if c.reasoning) > 1  # streamed as it comes, not at the end


def test_reasoning_then_tool_call(gateways: dict[str, tuple[str, openai.OpenAI]]) -> None:
    target, sdk = gateways["tools"]
    choice = sdk.chat.completions.create(model="echo", messages=USER, tools=[WEATHER], max_tokens=300).choices[0]  # type: ignore[arg-type, list-item]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    assert choice.message.model_extra["reasoning_content"] == "I need a tool."  # type: ignore[index]
    (call,) = choice.message.tool_calls or []
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    with GatewayClient(target) as client:
        done = client.generate(messages=USER, tools=[WEATHER], max_tokens=300)
    assert done.reasoning == "I need a tool." and [c.name for c in done.tool_calls] == ["get_weather"]
