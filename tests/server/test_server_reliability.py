"""Overload and hostile clients: the token-bounded queue, queue positions, stalled readers, scoped API keys, and
prompts staying out of the logs."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from srv_helpers import GatedEcho, md, open_stub, poll, running, target

from trt_gateway.executors.echo import EchoExecutor
from trt_gateway.v1 import gateway_pb2 as pb
from trt_gateway.v1 import gateway_pb2_grpc as pb_grpc


async def read_rest(call: grpc.aio.UnaryStreamCall) -> list[pb.GenerateStreamResponse]:
    out = []
    while (msg := await call.read()) is not grpc.aio.EOF:
        out.append(msg)
    return out


def req(text: str = "hello", max_tokens: int = 8, **kw: object) -> pb.GenerateRequest:
    return pb.GenerateRequest(text=text, stopping=pb.StoppingCriteria(max_tokens=max_tokens, ignore_eos=True), **kw)  # type: ignore[arg-type]


async def test_queue_is_bounded_by_tokens_too() -> None:
    engine = GatedEcho()
    admission = {"max_inflight": 1, "max_queued": 10, "max_queued_tokens": 100}
    async with running(engine, admission=admission) as server, open_stub(server) as stub:
        running_call = stub.Generate(req("a", 4))
        await poll(lambda: len(engine.started) == 1)
        queued = stub.Generate(req("b", 60))  # ~61 tokens: fits in 100
        await poll(lambda: server.servicer.admission.queued == 1)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Generate(req("c", 60))  # 61 + 61 > 100
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "by tokens" in (info.value.details() or "")
        assert int(md(info.value.trailing_metadata())["retry-after-ms"]) > 0
        engine.release.set()
        assert (await running_call).outputs[0].text == "aaaa"
        assert (await queued).outputs[0].finish_reason == pb.FINISH_REASON_LENGTH


async def test_queue_position_is_reported_while_waiting_and_updates() -> None:
    engine = GatedEcho()
    async with running(engine, admission={"max_inflight": 1}) as server, open_stub(server) as stub:
        first = stub.Generate(req("a", 2))
        await poll(lambda: len(engine.started) == 1)
        opts = pb.ResponseOptions(queue_position=True)
        second = stub.GenerateStream(req("b", 2, response=opts))
        third = stub.GenerateStream(req("c", 2, response=opts, priority=5))  # jumps ahead of "b"
        b_first, c_first = await second.read(), await third.read()
        assert c_first.queue_position == 1 and not c_first.token_ids
        assert b_first.queue_position == 1  # "b" was alone when it queued...
        assert (await second.read()).queue_position == 2  # ...then "c" overtook it
        engine.release.set()
        await first
        rest_c = await read_rest(third)
        assert "".join(c.text for c in rest_c) == "cc" and all(c.queue_position == 0 for c in rest_c)
        rest_b = await read_rest(second)
        assert [c.queue_position for c in rest_b if c.queue_position] == [1]  # moved up once "c" was admitted
        assert "".join(c.text for c in rest_b) == "bb"


async def test_a_stalled_reader_is_aborted_after_the_stall_timeout() -> None:
    engine = EchoExecutor()
    # One chunk per token (no coalescing), so that 4,000 tokens overfill the window; test_server_coalescing.py has
    # the same with coalescing on.
    async with running(engine, server={"stall_timeout_s": 0.5, "stream_coalesce_tokens": 1}) as server:
        # No BDP probing: the client's flow-control window stays at its initial 64 KiB, as a stalled client's would.
        async with grpc.aio.insecure_channel(target(server), options=[("grpc.http2.bdp_probe", 0)]) as channel:
            stub = pb_grpc.GatewayStub(channel)
            call = stub.GenerateStream(req("x" * 200, 4000, request_id="stalled"))
            await call.initial_metadata()
            # Read nothing: ~1,500 chunks fill the 64 KiB window, the server's yield blocks, the timer fires.
            assert await poll(lambda: "stalled" in engine.aborts, timeout=10)
            assert server.metrics.registry.get_sample_value("trt_gateway_rejected_total", {"reason": "stalled"}) == 1
            call.cancel()


async def test_a_reading_client_is_never_treated_as_stalled() -> None:
    engine = EchoExecutor({"token_delay_s": 0.01})
    async with running(engine, server={"stall_timeout_s": 0.2}) as server, open_stub(server) as stub:
        chunks = [c async for c in stub.GenerateStream(req("abc", 40))]  # 0.4 s in all, well past the timeout
        assert chunks[-1].finish_reason == pb.FINISH_REASON_LENGTH
        assert engine.aborts == []


SCOPED = {
    "api_keys": ["admin"],
    "scoped_api_keys": [
        {"key": "base-only", "models": ["echo"], "adapters": [""]},
        {"key": "other-model", "models": ["not-echo"]},
    ],
}


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def test_scoped_keys_limit_models_and_adapters(tmp_path) -> None:
    (tmp_path / "a1").mkdir()
    (tmp_path / "a1" / "adapter_config.json").write_text('{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}')
    lora = {"adapter_roots": [str(tmp_path)]}
    async with running(server=SCOPED, executor={"lora": lora}) as server, open_stub(server) as stub:
        admin = bearer("admin")
        await stub.LoadAdapter(pb.LoadAdapterRequest(name="a1", path=str(tmp_path / "a1")), metadata=admin)
        ok = await stub.Generate(req("hi", 2), metadata=bearer("base-only"))
        assert ok.outputs[0].text == "hi"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Generate(req("hi", 2, adapter="a1"), metadata=bearer("base-only"))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert md(info.value.trailing_metadata())["error-field"] == "adapter"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Generate(req("hi", 2), metadata=bearer("other-model"))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert md(info.value.trailing_metadata())["error-field"] == "model"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.UnloadAdapter(pb.UnloadAdapterRequest(name="a1"), metadata=bearer("base-only"))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert (await stub.Generate(req("hi", 2, adapter="a1"), metadata=admin)).outputs[0].text == "hi"


@pytest.mark.parametrize("log_requests", [False, True])
async def test_prompts_and_outputs_are_logged_only_when_turned_on(caplog, log_requests: bool) -> None:
    secret = "my-secret-prompt-8237"
    caplog.set_level(logging.DEBUG, logger="trt_gateway")
    async with running(server={"log_requests": log_requests}) as server, open_stub(server) as stub:
        await stub.Generate(req(secret, 4))
        with pytest.raises(grpc.aio.AioRpcError):  # an error path too
            await stub.Generate(pb.GenerateRequest(text=secret, sampling=pb.SamplingParams(top_p=7.0)))
        [c async for c in stub.GenerateStream(req(secret, 4))]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert (secret in logged) is log_requests
    assert (secret[:4] in logged) is log_requests  # outputs (the echo of the prompt) follow the same rule


async def test_abort_storm_while_queued_loses_no_slot() -> None:
    """Requests aborted in the queue must not leak admission slots: afterwards the queue runs normally."""
    engine = GatedEcho()
    async with running(engine, admission={"max_inflight": 2}) as server, open_stub(server) as stub:
        held = [stub.Generate(req(f"r{i}", 1)) for i in range(2)]
        await poll(lambda: len(engine.started) == 2)
        queued = [stub.Generate(req("q", 1, request_id=f"q{i}")) for i in range(20)]
        await poll(lambda: server.servicer.admission.queued == 20)
        await asyncio.gather(*(stub.Abort(pb.AbortRequest(request_id=f"q{i}")) for i in range(20)))
        results = await asyncio.gather(*queued)
        assert all(r.outputs[0].finish_reason == pb.FINISH_REASON_CANCELLED for r in results)
        engine.release.set()
        await asyncio.gather(*held)
        assert server.servicer.admission.inflight == 0 and server.servicer.admission.queued == 0
        assert (await stub.Generate(req("ok", 2))).outputs[0].text == "ok"
