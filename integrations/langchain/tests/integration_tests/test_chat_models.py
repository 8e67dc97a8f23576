"""ChatTrtGateway against live gateways: the demo model for real tokens, the scripted executor for what the demo model
cannot show (adapters, speculative statistics, the requests sent, concurrency, auth, deadlines). Structured output and
tool calling on the demo model: test_structured_output.py and test_tools.py."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage, SystemMessage
from pydantic import BaseModel
from trt_gateway import errors
from trt_gateway.testing import ALIAS, API_KEY, JSON_REPLY, REPLY

from langchain_trt_gateway import ChatTrtGateway

PROMPT = "What does the for statement do?"


def demo(**kwargs: object) -> ChatTrtGateway:
    params: dict[str, object] = {"model": "demo", "temperature": 0, "max_tokens": 16, **kwargs}
    return ChatTrtGateway(**params)  # type: ignore[arg-type]


def scripted_model(target: str, **kwargs: object) -> ChatTrtGateway:
    return ChatTrtGateway(target=target, model="scripted", api_key=API_KEY, **kwargs)  # type: ignore[arg-type]


def check_stream(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    """Token deltas, with usage and finish metadata on the last chunk only; returns the aggregate."""
    assert len([c for c in chunks if c.content]) > 1, "expected several token deltas"
    *body, last = chunks
    for c in body:
        assert c.usage_metadata is None
        assert "finish_reason" not in c.response_metadata and "model_name" not in c.response_metadata
    assert last.chunk_position == "last"
    assert last.usage_metadata is not None and last.response_metadata["finish_reason"]
    full = chunks[0]
    for c in chunks[1:]:
        full = full + c
    return full


def test_stream_matches_invoke_and_reports_on_last_chunk_only() -> None:
    llm = demo()
    done = llm.invoke(PROMPT)
    full = check_stream(list(llm.stream(PROMPT)))
    assert full.content == done.content  # greedy: the same tokens either way
    assert full.usage_metadata == done.usage_metadata
    assert full.usage_metadata["output_tokens"] == 16 and full.usage_metadata["input_tokens"] > 0
    assert full.response_metadata["model_name"] == "demo"
    assert full.response_metadata["finish_reason"] == done.response_metadata["finish_reason"] == "length"


async def test_astream_is_async_and_matches_ainvoke(monkeypatch: pytest.MonkeyPatch) -> None:
    llm = demo()

    def no_blocking_client(self: ChatTrtGateway) -> None:
        raise AssertionError("the async path used the blocking client")

    monkeypatch.setattr(ChatTrtGateway, "client", property(no_blocking_client))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    try:
        chunks = [c async for c in llm.astream(PROMPT)]
        during_stream = ticks
        done = await llm.ainvoke(PROMPT)
    finally:
        task.cancel()
    assert during_stream >= 3, "the event loop was blocked while streaming"
    assert check_stream(chunks).content == done.content


def test_default_model_name_comes_from_the_server() -> None:
    msg = ChatTrtGateway(max_tokens=4).invoke("Hello")
    assert msg.response_metadata["model_name"] == "demo"


def test_per_call_model_and_unknown_model() -> None:
    llm = demo()
    assert llm.invoke("Hello", model=ALIAS).response_metadata["model_name"] == ALIAS
    with pytest.raises(errors.NotFound, match="no-such-model"):
        llm.invoke("Hello", model="no-such-model")


def test_stop_per_call_cuts_the_output() -> None:
    llm = demo(max_tokens=24)
    full = llm.invoke(PROMPT).text
    words = full.split()
    assert len(words) > 2
    stop = words[len(words) // 2]
    cut = llm.invoke(PROMPT, stop=[stop])
    assert cut.text == full[: full.index(stop)]
    assert cut.response_metadata["finish_reason"] == "stop_string"
    assert cut.response_metadata["stop_sequence"] == stop
    # An instance stop applies by default; a per-call list replaces it and [] clears it.
    with_default = demo(max_tokens=24, stop=[stop])
    assert with_default.invoke(PROMPT).text == cut.text
    assert with_default.invoke(PROMPT, stop=[]).text == full
    streamed = "".join(c.text for c in llm.stream(PROMPT, stop=[stop]))
    assert streamed == cut.text


def test_system_and_history_go_through_the_chat_template() -> None:
    msg = demo().invoke([SystemMessage("You document Python."), HumanMessage("Explain range().")])
    assert msg.usage_metadata is not None
    # The rendered template is longer than the two contents alone (role markers and special tokens).
    assert msg.usage_metadata["input_tokens"] > 6


def test_bound_adapter_and_speculative_stats(scripted: tuple[str, object]) -> None:
    target, executor = scripted
    llm = scripted_model(target).bind(adapter="sql-lora")
    chunks = list(llm.stream("Hi"))
    full = check_stream(chunks)
    assert full.content == REPLY
    md = full.response_metadata
    assert md["adapter"] == "sql-lora"
    assert md["speculative"] == {"draft_tokens": 8, "accepted_tokens": 6, "acceptance_rate": 0.75}
    assert md["model_name"] == "scripted"
    assert [r.adapter for r in executor.requests] == ["sql-lora"]  # type: ignore[attr-defined]
    # The instance default, overridden per call.
    scripted_model(target, adapter="a1").invoke("Hi", adapter="a2")
    assert executor.requests[-1].adapter == "a2"  # type: ignore[attr-defined]


def test_batch_is_concurrent(scripted: tuple[str, object]) -> None:
    target, executor = scripted
    executor.word_delay_s = 0.05  # type: ignore[attr-defined]
    out = scripted_model(target).batch(["a", "b", "c", "d"])
    assert [m.content for m in out] == [REPLY] * 4
    assert executor.peak_in_flight == 4  # type: ignore[attr-defined]


async def test_abatch_is_concurrent(scripted: tuple[str, object]) -> None:
    target, executor = scripted
    executor.word_delay_s = 0.05  # type: ignore[attr-defined]
    out = await scripted_model(target).abatch(["a", "b", "c", "d"])
    assert [m.content for m in out] == [REPLY] * 4
    assert executor.peak_in_flight == 4  # type: ignore[attr-defined]


class Person(BaseModel):
    name: str
    age: int


def test_structured_output_uses_guided_json(scripted: tuple[str, object]) -> None:
    target, executor = scripted
    llm = scripted_model(target)
    assert llm.with_structured_output(Person).invoke("Who?") == Person(**JSON_REPLY)
    assert '"age"' in executor.requests[-1].guided.json_schema  # type: ignore[attr-defined]
    raw = llm.with_structured_output(Person, include_raw=True).invoke("Who?")
    assert raw["parsed"] == Person(**JSON_REPLY) and raw["parsing_error"] is None
    assert llm.with_structured_output(method="json_mode").invoke("Who?") == JSON_REPLY


def test_structured_calls_are_greedy_unless_told(scripted: tuple[str, object]) -> None:
    target, executor = scripted
    requests = executor.requests  # type: ignore[attr-defined]
    scripted_model(target).with_structured_output(Person).invoke("Who?")
    assert requests[-1].sampling.temperature == 0
    scripted_model(target, temperature=0.7).with_structured_output(Person).invoke("Who?")
    assert requests[-1].sampling.temperature == pytest.approx(0.7)
    scripted_model(target).bind(temperature=0.5).invoke("Who?", json_schema=Person.model_json_schema())
    assert requests[-1].sampling.temperature == pytest.approx(0.5)
    scripted_model(target).invoke("Who?")  # unguided: the server's default
    assert requests[-1].sampling.temperature == 1.0


async def test_structured_output_async(scripted: tuple[str, object]) -> None:
    target, _ = scripted
    schema = {"title": "person", "type": "object", "properties": {"name": {"type": "string"}}}
    assert await scripted_model(target).with_structured_output(schema).ainvoke("Who?") == JSON_REPLY


def test_structured_output_refused_without_guided_decoding(echo_target: str) -> None:
    llm = ChatTrtGateway(target=echo_target, max_tokens=8)
    with pytest.raises(errors.Unimplemented, match="guided decoding by json_schema.*'echo'"):
        llm.with_structured_output(Person).invoke("Who?")
    with pytest.raises(errors.Unimplemented, match="guided decoding by json_schema"):
        llm.bind_tools([Person], tool_choice="any").invoke("Who?")


def test_api_key_is_sent_and_required(scripted: tuple[str, object]) -> None:
    target, _ = scripted
    assert scripted_model(target).invoke("Hi").content == REPLY
    with pytest.raises(errors.Unauthenticated):
        ChatTrtGateway(target=target, model="scripted", api_key=None).invoke("Hi")


def test_timeout_per_call_and_default(scripted: tuple[str, object]) -> None:
    target, executor = scripted
    executor.word_delay_s = 0.5  # type: ignore[attr-defined]
    with pytest.raises(errors.DeadlineExceeded):
        scripted_model(target).invoke("Hi", timeout=0.2)
    with pytest.raises(errors.DeadlineExceeded):
        list(scripted_model(target, timeout=0.2).stream("Hi"))


def test_unreachable_gateway_fails_after_retries() -> None:
    llm = ChatTrtGateway(target="127.0.0.1:1", model="demo", max_retries=1, timeout=10)
    with pytest.raises(errors.Unavailable):
        llm.invoke("Hi")


def test_lcel_example_streams(demo_target: str) -> None:
    import importlib.util
    import io
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "lcel_streaming.py"
    spec = importlib.util.spec_from_file_location("lcel_streaming", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    chain = example.build_chain(ChatTrtGateway(target=demo_target, temperature=0, max_tokens=12))
    pieces = list(chain.stream({"topic": "the for statement"}))
    assert len([p for p in pieces if p]) > 1 and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces) == chain.invoke({"topic": "the for statement"})

    out = io.StringIO()
    assert example.main(["--target", demo_target, "--max-tokens", "12", "lists"], out=out) == 0
    assert out.getvalue().strip()
