"""Abort RPC, client cancellation, disconnects and deadlines: each must reach the executor (`EchoExecutor.aborts`)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from srv_helpers import SLOW, collect, long_req, md, open_stub, poll, running, target

from trt_gateway.executors.echo import EchoExecutor
from trt_gateway.v1 import gateway_pb2 as pb
from trt_gateway.v1 import gateway_pb2_grpc as pb_grpc


@pytest.fixture
async def slow():
    engine = EchoExecutor(SLOW)
    async with running(engine) as server, open_stub(server) as stub:
        yield server, engine, stub


def idle(server, engine: EchoExecutor) -> bool:
    """Nothing left running anywhere: registry, admission slots, executor."""
    return len(server.servicer.registry) == 0 and server.servicer.admission.inflight == 0 and not engine._running


# -- Abort RPC -----------------------------------------------------------------------------------------------------


async def test_abort_unknown_is_ok_and_not_found(stub) -> None:
    r = await stub.Abort(pb.AbortRequest(request_id="never-seen"))
    assert r.found is False
    r = await stub.Abort(pb.AbortRequest(request_id="never-seen"))
    assert r.found is False


@pytest.mark.parametrize("rid", ["", "has space", "x" * 129, "semi;colon"])
async def test_abort_invalid_request_id(stub, rid) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Abort(pb.AbortRequest(request_id=rid))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert md(err.value.trailing_metadata())["error-field"] == "request_id"


async def test_abort_running_stream_ends_cancelled_with_status_ok(slow) -> None:
    server, engine, stub = slow
    call = stub.GenerateStream(long_req(200, request_id="ab-1"))
    it = call.__aiter__()
    first = await it.__anext__()
    assert first.request_id == "ab-1"
    r1 = await stub.Abort(pb.AbortRequest(request_id="ab-1"))
    r2 = await stub.Abort(pb.AbortRequest(request_id="ab-1"))  # idempotent while it winds down
    assert r1.found is True
    assert r2.found in (True, False)
    rest = [c async for c in it]
    assert await call.code() == grpc.StatusCode.OK
    last = rest[-1]
    assert last.finish_reason == pb.FINISH_REASON_CANCELLED
    assert 0 < last.usage.completion_tokens < 200
    assert last.HasField("timings")
    assert "ab-1" in engine.aborts
    assert await poll(lambda: idle(server, engine))
    r3 = await stub.Abort(pb.AbortRequest(request_id="ab-1"))  # finished: still OK, found False
    assert r3.found is False


async def test_abort_running_unary_returns_cancelled_output(slow) -> None:
    server, engine, stub = slow
    task = asyncio.ensure_future(stub.Generate(long_req(200, request_id="ab-u")))
    assert await poll(lambda: "ab-u" in engine._running)
    assert (await stub.Abort(pb.AbortRequest(request_id="ab-u"))).found is True
    r = await task
    assert r.outputs[0].finish_reason == pb.FINISH_REASON_CANCELLED
    assert r.outputs[0].usage.completion_tokens < 200


async def test_abort_n3_cancels_every_output(slow) -> None:
    server, engine, stub = slow
    call = stub.GenerateStream(long_req(200, request_id="ab-n", n=3))
    it = call.__aiter__()
    await it.__anext__()
    assert (await stub.Abort(pb.AbortRequest(request_id="ab-n"))).found is True
    chunks = [c async for c in it]
    assert await call.code() == grpc.StatusCode.OK
    finals = {c.index: c.finish_reason for c in chunks if c.finish_reason}
    assert finals == {i: pb.FINISH_REASON_CANCELLED for i in range(3)}
    assert {"ab-n/0", "ab-n/1", "ab-n/2"} <= set(engine.aborts)


# -- client cancel, disconnect, deadline ---------------------------------------------------------------------------


async def test_client_cancel_stream_reaches_executor(slow) -> None:
    server, engine, stub = slow
    call = stub.GenerateStream(long_req(200, request_id="cc-1"))
    it = call.__aiter__()
    await it.__anext__()
    await it.__anext__()
    assert "cc-1" not in engine.aborts
    call.cancel()
    assert await poll(lambda: "cc-1" in engine.aborts), engine.aborts
    assert await poll(lambda: idle(server, engine))
    assert await call.code() == grpc.StatusCode.CANCELLED
    # The server is fine afterwards, and the id is free again.
    r = await stub.Generate(pb.GenerateRequest(text="ok", request_id="cc-1"))
    assert r.outputs[0].text == "ok"


async def test_client_cancel_n3_aborts_every_sub_request(slow) -> None:
    server, engine, stub = slow
    call = stub.GenerateStream(long_req(200, request_id="cc-n", n=3))
    await call.__aiter__().__anext__()
    call.cancel()
    assert await poll(lambda: {"cc-n/0", "cc-n/1", "cc-n/2"} <= set(engine.aborts)), engine.aborts
    assert await poll(lambda: idle(server, engine))


async def test_channel_close_mid_stream_reaches_executor(slow) -> None:
    server, engine, _ = slow
    channel = grpc.aio.insecure_channel(target(server))
    stub = pb_grpc.GatewayStub(channel)
    call = stub.GenerateStream(long_req(200, request_id="dc-1"))
    await call.__aiter__().__anext__()
    await channel.close()  # the client process goes away
    assert await poll(lambda: "dc-1" in engine.aborts), engine.aborts
    assert await poll(lambda: idle(server, engine))


async def test_deadline_on_stream(slow) -> None:
    server, engine, stub = slow
    call = stub.GenerateStream(long_req(200, request_id="dl-1"), timeout=0.2)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(call)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await poll(lambda: "dl-1" in engine.aborts), engine.aborts
    assert await poll(lambda: idle(server, engine))
    counted = {"method": "GenerateStream", "code": "DEADLINE_EXCEEDED"}
    assert await poll(lambda: server.metrics.registry.get_sample_value("trt_gateway_requests_total", counted) == 1)


async def test_client_cancel_unary_reaches_executor(slow) -> None:
    server, engine, stub = slow
    call = stub.Generate(long_req(200, request_id="cu-1"))
    assert await poll(lambda: "cu-1" in engine._running)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await poll(lambda: "cu-1" in engine.aborts), engine.aborts
    assert await poll(lambda: idle(server, engine))


async def test_deadline_on_unary(slow) -> None:
    server, engine, stub = slow
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Generate(long_req(200, request_id="du-1"), timeout=0.2)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await poll(lambda: "du-1" in engine.aborts), engine.aborts
    assert await poll(lambda: idle(server, engine))
    counted = {"method": "Generate", "code": "DEADLINE_EXCEEDED"}
    assert await poll(lambda: server.metrics.registry.get_sample_value("trt_gateway_requests_total", counted) == 1)


async def test_cancelled_stream_does_not_disturb_others(slow) -> None:
    server, engine, stub = slow
    victim = stub.GenerateStream(long_req(200, request_id="victim"))
    survivor = asyncio.ensure_future(collect(stub.GenerateStream(long_req(6, request_id="survivor"))))
    await victim.__aiter__().__anext__()
    victim.cancel()
    chunks = await survivor
    assert chunks[-1].finish_reason == pb.FINISH_REASON_LENGTH
    assert "".join(c.text for c in chunks) == "abcdef"
    assert "survivor" not in engine.aborts
