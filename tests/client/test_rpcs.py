"""Every client method against a real in-process gateway; each test runs with the sync and the async client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from client_helpers import serve

from trt_gateway import errors
from trt_gateway.client import Completion, ModelInfo, Residency, StreamChunk, Usage
from trt_gateway.executors.echo import EOS, EchoExecutor, render_chat


async def test_generate_returns_a_completion(gw, connect):
    client = connect(gw)
    done = await client.generate("hello", max_tokens=3, temperature=0, request_id="gen-1")
    assert isinstance(done, Completion)
    assert (done.request_id, done.text, done.token_ids) == ("gen-1", "hel", tuple(b"hel"))
    assert done.finish_reason == "length"
    assert done.usage == Usage(prompt_tokens=5, completion_tokens=3)
    assert done.timings is not None and done.timings.total_time_ms > 0
    assert len(done.outputs) == 1 and done.outputs[0].text == "hel" and done.prompt is None


async def test_generate_stop_reasons_and_options(gw, connect):
    client = connect(gw)
    eos = await client.generate("hi")
    assert (eos.text, eos.finish_reason, eos.matched_stop_token_id) == ("hi", "stop_token", EOS)
    assert len(eos.request_id) == 32  # made by the server
    stop = await client.generate("hello world", stop="wor")
    assert (stop.text, stop.finish_reason, stop.matched_stop) == ("hello ", "stop_string", "wor")
    chat = await client.generate(messages=[{"role": "user", "content": "hi"}, ("user", "yo")], max_tokens=100)
    assert chat.text == render_chat_text([("user", "hi"), ("user", "yo")])
    extra = await client.generate(
        token_ids=[104, 105], n=2, logprobs=True, top_logprobs=1, echo=True, prompt_token_ids=True, seed=7
    )
    assert [o.text for o in extra.outputs] == ["hi", "hi"] and [o.index for o in extra.outputs] == [0, 1]
    assert extra.usage.completion_tokens == 6 and extra.usage.prompt_tokens == 2  # EOS counted per output
    assert [lp.token_id for lp in extra.logprobs] == [104, 105] and extra.logprobs[0].top[0].token_id == 104
    assert extra.prompt is not None and (extra.prompt.token_ids, extra.prompt.text) == ((104, 105), "hi")


def render_chat_text(pairs):
    from trt_gateway.types import ChatMessage

    return render_chat([ChatMessage(r, c) for r, c in pairs])


async def test_stream_yields_deltas_then_a_final_chunk(gw, connect):
    client = connect(gw)
    async with client.stream("hello", request_id="st-1") as stream:
        assert stream.request_id == "st-1"
        chunks = [c async for c in stream]
    assert all(isinstance(c, StreamChunk) and c.request_id == "st-1" for c in chunks)
    assert "".join(c.text for c in chunks) == "hello"
    assert [t for c in chunks for t in c.token_ids] == list(b"hello")
    assert all(c.finish_reason is None and c.usage is None for c in chunks[:-1])
    last = chunks[-1]
    assert (last.finish_reason, last.matched_stop_token_id) == ("stop_token", EOS)
    assert last.usage == Usage(prompt_tokens=5, completion_tokens=6) and last.timings is not None


async def test_stream_request_id_comes_from_the_server_when_not_given(gw, connect):
    client = connect(gw)
    stream = client.stream("ab", echo=True, max_tokens=1)
    assert stream.request_id is None  # not opened yet
    chunks = [c async for c in stream]
    assert len(stream.request_id or "") == 32 and {c.request_id for c in chunks} == {stream.request_id}
    assert chunks[0].prompt is not None and chunks[0].prompt.text == "ab"
    assert chunks[-1].finish_reason == "length"


async def test_tokenize(gw, connect):
    client = connect(gw)
    assert await client.tokenize("hi") == [104, 105]
    assert await client.tokenize(messages=[("user", "x")], add_special_tokens=False) == list(b"user: x\nassistant: ")
    with pytest.raises(errors.NotFound):
        await client.tokenize("hi", model="nope")


async def test_models_and_model_info(gw, connect):
    client = connect(gw)
    (info,) = await client.models()
    assert isinstance(info, ModelInfo)
    assert (info.name, info.executor, info.default, info.ready, info.eos_token_ids) == (
        "echo",
        "echo",
        True,
        True,
        (EOS,),
    )
    assert info.capabilities.lora and info.capabilities.chat_template and info.limits.max_n == 8
    assert await client.model_info() == info == await client.model_info("echo")
    with pytest.raises(errors.NotFound) as exc_info:
        await client.model_info("nope")
    assert exc_info.value.field == "model"


async def test_abort_ends_a_running_stream_as_cancelled(connect):
    async with serve(EchoExecutor({"token_delay_s": 0.02})) as server:
        client = connect(server)
        async with client.stream("x" * 200, request_id="ab-1") as stream:
            first = await stream.__anext__()
            assert first.request_id == "ab-1"
            assert await client.abort("ab-1") is True
            rest = [c async for c in stream]
        assert rest[-1].finish_reason == "cancelled"
        assert len(rest) < 199
        assert await client.abort("ab-1") is False  # finished: still OK, idempotent


async def test_adapters_load_list_use_unload(tmp_path: Path, connect):
    adapter = tmp_path / "ad1"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16, "target_modules": ["v", "q"]}))
    async with serve(executor={"name": "echo", "lora": {"adapter_roots": [str(tmp_path)]}}) as server:
        client = connect(server)
        assert await client.adapters() == []
        info = await client.load_adapter("ad1", str(adapter))
        assert (info.name, info.rank, info.alpha, info.target_modules) == ("ad1", 8, 16.0, ("q", "v"))
        assert info.residency is Residency.CPU and info.model == "echo"
        assert [a.name for a in await client.adapters("echo")] == ["ad1"]
        assert (await client.generate("ok", adapter="ad1")).text == "ok"
        await client.unload_adapter("ad1")
        assert await client.adapters() == []
        with pytest.raises(errors.NotFound):
            await client.unload_adapter("ad1")
        with pytest.raises(errors.InvalidArgument) as exc_info:
            await client.load_adapter("evil", "/etc")
        assert exc_info.value.field == "path"


async def test_health(gw, connect):
    client = connect(gw)
    assert await client.health() == "SERVING"
    assert await client.health("trt_gateway.v1.Gateway/echo") == "SERVING"
    with pytest.raises(errors.NotFound):
        await client.health("no.such.Service")


async def test_health_reports_not_serving_while_draining(connect):
    async with serve() as server:
        client = connect(server)
        await server.health.enter_graceful_shutdown()
        assert await client.health() == "NOT_SERVING"
