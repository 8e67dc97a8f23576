"""The admission queue seen through gRPC: queue full, retry-after, priority order, abort and cancel while queued,
queue time in timings."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from srv_helpers import SLOW, GatedEcho, collect, long_req, md, open_stub, poll, running

from trt_gateway.executors.echo import EchoExecutor
from trt_gateway.v1 import gateway_pb2 as pb

ONE_SLOT = {"max_inflight": 1, "max_queued": 1}


async def test_queue_full_is_resource_exhausted_with_retry_after() -> None:
    engine = EchoExecutor(SLOW)
    async with running(engine, admission=ONE_SLOT) as server, open_stub(server) as stub:
        adm = server.servicer.admission
        a = stub.GenerateStream(long_req(8, request_id="a"))
        await a.__aiter__().__anext__()
        b = asyncio.ensure_future(collect(stub.GenerateStream(long_req(4, request_id="b"))))
        assert await poll(lambda: adm.inflight == 1 and adm.queued == 1)
        for third in (stub.Generate(long_req(4)), collect(stub.GenerateStream(long_req(4)))):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await third
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "queue is full" in err.value.details()
            trailing = md(err.value.trailing_metadata())
            assert int(trailing["retry-after-ms"]) == 1000
        rejected = server.metrics.registry.get_sample_value("trt_gateway_rejected_total", {"reason": "queue_full"})
        assert rejected == 2
        # The two accepted requests are still served in full.
        rest = [c async for c in a]
        assert rest[-1].finish_reason == pb.FINISH_REASON_LENGTH
        chunks = await b
        assert "".join(c.text for c in chunks) == "abcd"
        assert chunks[-1].finish_reason == pb.FINISH_REASON_LENGTH
        assert chunks[-1].timings.queue_time_ms > 0  # it waited for a
        assert rest[-1].timings.queue_time_ms == 0  # a did not wait
        assert await poll(lambda: adm.inflight == 0 and adm.queued == 0)


async def test_higher_priority_queued_request_is_admitted_first() -> None:
    engine = GatedEcho()
    async with running(engine, admission={"max_inflight": 1, "max_queued": 10}) as server, open_stub(server) as stub:
        adm = server.servicer.admission
        tasks = [asyncio.ensure_future(stub.Generate(pb.GenerateRequest(text="first")))]
        assert await poll(lambda: engine.started == ["first"])
        for text, priority in (("low", 0), ("low2", -5), ("high", 5), ("high2", 5), ("mid", 1)):
            tasks.append(asyncio.ensure_future(stub.Generate(pb.GenerateRequest(text=text, priority=priority))))
            n = len(tasks) - 1
            assert await poll(lambda n=n: adm.queued == n)  # noqa: B023 - each request is queued before the next
        engine.release.set()
        results = await asyncio.gather(*tasks)
        # Highest priority first, FIFO within a priority.
        assert engine.started == ["first", "high", "high2", "mid", "low", "low2"]
        assert [r.outputs[0].text for r in results] == ["first", "low", "low2", "high", "high2", "mid"]
        assert all(r.timings.queue_time_ms > 0 for r in results[1:])


async def test_abort_while_queued_ends_cancelled() -> None:
    engine = EchoExecutor(SLOW)
    async with running(engine, admission=ONE_SLOT) as server, open_stub(server) as stub:
        adm = server.servicer.admission
        a = stub.GenerateStream(long_req(6, request_id="a"))
        await a.__aiter__().__anext__()
        queued = stub.GenerateStream(long_req(4, request_id="queued"))
        assert await poll(lambda: adm.queued == 1)
        assert (await stub.Abort(pb.AbortRequest(request_id="queued"))).found is True
        chunks = await collect(queued)
        assert await queued.code() == grpc.StatusCode.OK
        assert len(chunks) == 1
        assert chunks[0].request_id == "queued"
        assert chunks[0].finish_reason == pb.FINISH_REASON_CANCELLED
        assert chunks[0].usage.completion_tokens == 0
        assert adm.queued == 0
        # It never reached the executor's generate, and the running one was not disturbed.
        rest = [c async for c in a]
        assert rest[-1].finish_reason == pb.FINISH_REASON_LENGTH
        assert "a" not in engine.aborts
        assert await poll(lambda: adm.inflight == 0)
        assert (await stub.Abort(pb.AbortRequest(request_id="queued"))).found is False


async def test_abort_while_queued_unary() -> None:
    engine = EchoExecutor(SLOW)
    async with running(engine, admission=ONE_SLOT) as server, open_stub(server) as stub:
        adm = server.servicer.admission
        a = stub.GenerateStream(long_req(6, request_id="a"))
        await a.__aiter__().__anext__()
        task = asyncio.ensure_future(stub.Generate(long_req(4, request_id="q", n=2)))
        assert await poll(lambda: adm.queued == 1)
        await stub.Abort(pb.AbortRequest(request_id="q"))
        r = await task
        assert [o.finish_reason for o in r.outputs] == [pb.FINISH_REASON_CANCELLED] * 2
        a.cancel()


@pytest.mark.parametrize("how", ["cancel", "deadline"])
async def test_client_gone_while_queued_frees_the_place(how: str) -> None:
    engine = EchoExecutor(SLOW)
    async with running(engine, admission=ONE_SLOT) as server, open_stub(server) as stub:
        adm = server.servicer.admission
        a = stub.GenerateStream(long_req(8, request_id="a"))
        await a.__aiter__().__anext__()
        queued = stub.GenerateStream(long_req(4, request_id="gone"), timeout=0.3 if how == "deadline" else None)
        assert await poll(lambda: adm.queued == 1)
        if how == "cancel":
            queued.cancel()
        with pytest.raises((grpc.aio.AioRpcError, asyncio.CancelledError)):
            await collect(queued)
        assert await poll(lambda: adm.queued == 0)
        assert len(server.servicer.registry) == 1  # only "a"
        # The place is free again: another request queues, and runs once "a" is done.
        nxt = asyncio.ensure_future(collect(stub.GenerateStream(long_req(3, request_id="next"))))
        rest = [c async for c in a]
        assert rest[-1].finish_reason == pb.FINISH_REASON_LENGTH
        assert (await nxt)[-1].finish_reason == pb.FINISH_REASON_LENGTH
        assert await poll(lambda: adm.inflight == 0 and adm.queued == 0)


async def test_many_concurrent_requests_all_complete_through_a_small_window() -> None:
    engine = EchoExecutor({"token_delay_s": 0.001})
    async with running(engine, admission={"max_inflight": 2, "max_queued": 50}) as server, open_stub(server) as stub:
        results = await asyncio.gather(*(stub.Generate(pb.GenerateRequest(text=f"r{i}")) for i in range(20)))
        assert [r.outputs[0].text for r in results] == [f"r{i}" for i in range(20)]
        assert server.servicer.admission.inflight == 0
        assert server.metrics.registry.get_sample_value("trt_gateway_inflight_requests") == 0
        assert server.metrics.registry.get_sample_value("trt_gateway_queue_depth") == 0
