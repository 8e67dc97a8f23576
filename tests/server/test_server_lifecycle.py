"""Health, reflection, graceful shutdown (drain), executor death and `serve()`'s exit code."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from srv_helpers import collect, long_req, open_stub, poll, running, target

from trt_gateway.config import from_mapping
from trt_gateway.executors.base import Health
from trt_gateway.executors.echo import EchoExecutor
from trt_gateway.server import app
from trt_gateway.server.app import GatewayServer
from trt_gateway.v1 import gateway_pb2 as pb
from trt_gateway.v1 import gateway_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
NAMES = ("", "trt_gateway.v1.Gateway", "trt_gateway.v1.Gateway/echo")


async def check(channel: grpc.aio.Channel, service: str) -> int:
    r = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
    return r.status


# -- health and reflection -----------------------------------------------------------------------------------------


async def test_health_serving_for_server_service_and_model(gateway) -> None:
    assert app.model_health_name("echo") == "trt_gateway.v1.Gateway/echo"
    assert app.SERVICE_NAME == "trt_gateway.v1.Gateway"
    async with grpc.aio.insecure_channel(target(gateway)) as channel:
        for name in NAMES:
            assert await check(channel, name) == SERVING, name
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await check(channel, "trt_gateway.v1.Gateway/no-such-model")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_uses_the_served_model_name() -> None:
    async with running(executor={"name": "echo", "served_name": "tiny-1"}) as server:
        async with grpc.aio.insecure_channel(target(server)) as channel:
            assert await check(channel, "trt_gateway.v1.Gateway/tiny-1") == SERVING


async def test_reflection_lists_the_gateway(gateway) -> None:
    async with grpc.aio.insecure_channel(target(gateway)) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def ask(**kwargs):
            call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**kwargs)]))
            return [r async for r in call][0]

        listed = await ask(list_services="")
        names = {s.name for s in listed.list_services_response.service}
        assert {"trt_gateway.v1.Gateway", "grpc.health.v1.Health"} <= names
        described = await ask(file_containing_symbol="trt_gateway.v1.Gateway")
        assert described.file_descriptor_response.file_descriptor_proto  # grpcurl can describe the API


class SlowStart(EchoExecutor):
    def __init__(self) -> None:
        super().__init__()
        self.loading = asyncio.Event()
        self.loaded = asyncio.Event()

    async def start(self) -> None:
        self.loading.set()
        await self.loaded.wait()
        await super().start()


async def test_while_starting_health_is_not_serving_and_rpcs_are_unavailable() -> None:
    engine = SlowStart()
    cfg = from_mapping({"server": {"host": "127.0.0.1", "port": 0, "http": False}, "executor": {"name": "echo"}})
    server = GatewayServer(cfg, engine)
    starting = asyncio.ensure_future(server.start())
    try:
        await asyncio.wait_for(engine.loading.wait(), 5)  # listening, executor still loading
        async with grpc.aio.insecure_channel(target(server)) as channel:
            assert await check(channel, "") == NOT_SERVING
            assert await check(channel, "trt_gateway.v1.Gateway") == NOT_SERVING
            stub = gateway_pb2_grpc.GatewayStub(channel)
            for call in (stub.Generate(pb.GenerateRequest(text="x")), stub.ListModels(pb.ListModelsRequest()),
                         collect(stub.GenerateStream(pb.GenerateRequest(text="x")))):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "starting" in err.value.details()
            engine.loaded.set()
            assert await asyncio.wait_for(starting, 2) == server.port
            for name in NAMES:
                assert await check(channel, name) == SERVING
            assert (await stub.Generate(pb.GenerateRequest(text="up"))).outputs[0].text == "up"
    finally:
        engine.loaded.set()
        await starting
        await server.stop(0.1)


# -- graceful shutdown ---------------------------------------------------------------------------------------------


async def test_stop_drains_in_flight_stream_and_refuses_new_rpcs() -> None:
    engine = EchoExecutor({"token_delay_s": 0.02})
    server_cm = running(engine)
    server = await server_cm.__aenter__()
    try:
        async with grpc.aio.insecure_channel(target(server)) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
            watch_it = watch.__aiter__()
            assert (await watch_it.__anext__()).status == SERVING

            call = stub.GenerateStream(long_req(15, request_id="draining"))
            it = call.__aiter__()
            first = await it.__anext__()
            stopping = asyncio.ensure_future(server.stop(5.0))

            # Health goes NOT_SERVING at once (watchers are told), while the stream still runs.
            assert (await asyncio.wait_for(watch_it.__anext__(), 2)).status == NOT_SERVING
            watch.cancel()
            assert all(server.health._server_status[n] == NOT_SERVING for n in NAMES)
            assert not stopping.done()

            # A new RPC after stop began is refused.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Generate(pb.GenerateRequest(text="too late"))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE

            # The in-flight stream completes in full.
            rest = [c async for c in it]
            assert await call.code() == grpc.StatusCode.OK
            assert "".join(c.text for c in [first, *rest]) == ("abcdefgh" * 2)[:15]
            assert rest[-1].finish_reason == pb.FINISH_REASON_LENGTH
            assert rest[-1].usage.completion_tokens == 15
            await asyncio.wait_for(stopping, 5)
            assert "draining" not in engine.aborts  # finished, not cut off
            assert engine.health() is not Health.SERVING  # the executor was shut down after the drain
    finally:
        await server_cm.__aexit__(None, None, None)


async def test_stop_serves_requests_already_queued() -> None:
    engine = EchoExecutor({"token_delay_s": 0.01})
    async with running(engine, admission={"max_inflight": 1, "max_queued": 4}) as server, open_stub(server) as stub:
        a = asyncio.ensure_future(collect(stub.GenerateStream(long_req(10, request_id="a"))))
        assert await poll(lambda: server.servicer.admission.inflight == 1)
        b = asyncio.ensure_future(collect(stub.GenerateStream(long_req(5, request_id="b"))))
        assert await poll(lambda: server.servicer.admission.queued == 1)
        await server.stop(5.0)
        assert (await a)[-1].finish_reason == pb.FINISH_REASON_LENGTH
        chunks = await b
        assert chunks[-1].finish_reason == pb.FINISH_REASON_LENGTH and chunks[-1].timings.queue_time_ms > 0


async def test_stop_after_grace_ends_streams_with_an_error_chunk_and_unavailable() -> None:
    engine = EchoExecutor({"token_delay_s": 0.05})
    async with running(engine, admission={"max_inflight": 2, "max_queued": 4}) as server, open_stub(server) as stub:
        value = server.metrics.registry.get_sample_value
        one = stub.GenerateStream(long_req(500, request_id="endless"))
        two = stub.GenerateStream(long_req(500, request_id="endless-n2", n=2))
        first = await one.__aiter__().__anext__()
        await two.__aiter__().__anext__()
        queued = asyncio.ensure_future(collect(stub.GenerateStream(long_req(5, request_id="queued"))))
        assert await poll(lambda: server.servicer.admission.queued == 1)
        await asyncio.wait_for(server.stop(0.2), 5)

        chunks = [first]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for chunk in one:
                chunks.append(chunk)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "the server shut down" in err.value.details() and "grace period" in err.value.details()
        last = chunks[-1]
        assert last.finish_reason == pb.FINISH_REASON_ERROR  # told, not left guessing, that the output ended
        assert last.usage.completion_tokens == sum(len(c.token_ids) for c in chunks) > 0
        assert all(c.finish_reason == pb.FINISH_REASON_UNSPECIFIED for c in chunks[:-1])

        with pytest.raises(grpc.aio.AioRpcError) as err:
            [c async for c in two]
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.aio.AioRpcError) as err:  # never admitted: no chunk, just the status
            await queued
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "shut down" in err.value.details()

        assert value("trt_gateway_rejected_total", {"reason": "shutdown"}) == 3
        assert value("trt_gateway_requests_total", {"method": "GenerateStream", "code": "UNAVAILABLE"}) == 3
        assert not value("trt_gateway_requests_total", {"method": "GenerateStream", "code": "CANCELLED"})
        assert {"endless", "endless-n2/0", "endless-n2/1"} <= set(engine.aborts)  # KV freed, not just dropped
        assert not engine._running


async def test_the_n2_stream_cut_off_gets_an_error_chunk_per_unfinished_output() -> None:
    engine = EchoExecutor({"token_delay_s": 0.05})
    async with running(engine) as server, open_stub(server) as stub:
        call = stub.GenerateStream(long_req(500, request_id="two", n=2))
        chunks = [await call.__aiter__().__anext__()]
        await asyncio.wait_for(server.stop(0.1), 5)
        with pytest.raises(grpc.aio.AioRpcError):
            async for chunk in call:
                chunks.append(chunk)
        errors_by_index = {c.index for c in chunks if c.finish_reason == pb.FINISH_REASON_ERROR}
        assert errors_by_index == {0, 1}


async def test_while_draining_the_port_answers_health_not_serving_and_refuses_generate() -> None:
    """The ports stay open until the grace ends: a probe on a fresh connection sees NOT_SERVING (HTTP 503), not a
    refused connection, and a new call gets UNAVAILABLE saying why."""
    import httpx

    engine = EchoExecutor({"token_delay_s": 0.02})
    async with running(engine, server={"http": True, "http_port": 0}) as server, open_stub(server) as stub:
        call = stub.GenerateStream(long_req(100, request_id="busy"))
        await call.__aiter__().__anext__()
        stopping = asyncio.ensure_future(server.stop(30.0))
        assert await poll(lambda: server.servicer.gateway.draining)
        async with grpc.aio.insecure_channel(target(server)) as fresh:  # a new connection, as a kubelet probe makes
            for name in NAMES:
                assert await check(fresh, name) == NOT_SERVING, name
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await gateway_pb2_grpc.GatewayStub(fresh).Generate(pb.GenerateRequest(text="new"))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in err.value.details()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as http:
            assert (await http.get("/health")).status_code == 503
            refused = await http.post("/v1/completions", json={"prompt": "x", "stream": True})
            assert refused.status_code == 503  # before the 200 of a stream: a plain error a router retries
        assert not stopping.done()
        chunks = [c async for c in call]
        assert chunks[-1].finish_reason == pb.FINISH_REASON_LENGTH  # the in-flight stream still finished in full
        await asyncio.wait_for(stopping, 5)
        assert server.servicer.metrics.registry.get_sample_value(
            "trt_gateway_rejected_total", {"reason": "draining"}) == 2


async def test_http_stream_cut_off_gets_an_error_event_before_done() -> None:
    import httpx

    engine = EchoExecutor({"token_delay_s": 0.05})
    async with running(engine, server={"http": True, "http_port": 0}) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}", timeout=10) as http:
            body = {"prompt": "abcdefgh", "max_tokens": 500, "ignore_eos": True, "stream": True}
            async with http.stream("POST", "/v1/completions", json=body) as response:
                lines = response.aiter_lines()
                assert (await lines.__anext__()).startswith("data: ")  # streaming
                stopping = asyncio.ensure_future(server.stop(0.1))
                events = [line async for line in lines if line.startswith("data: ")]
            await asyncio.wait_for(stopping, 5)
        assert events[-1] == "data: [DONE]"
        error = json.loads(events[-2].removeprefix("data: "))["error"]
        assert "the server shut down" in error["message"] and error["code"] == "unavailable"
        assert server.metrics.registry.get_sample_value(
            "trt_gateway_requests_total", {"method": "http.completions", "code": "UNAVAILABLE"}) == 1


async def test_stop_is_idempotent(gateway) -> None:
    await gateway.stop(0.1)
    await gateway.stop(0.1)
    await asyncio.wait_for(gateway.wait_stopped(), 1)


# -- executor death ------------------------------------------------------------------------------------------------


async def test_executor_death_goes_not_serving() -> None:
    engine = EchoExecutor()
    async with running(engine) as server:
        async with grpc.aio.insecure_channel(target(server)) as channel:
            assert await check(channel, "") == SERVING
            assert not server.engine_died
            engine.kill()
            assert await poll(lambda: server.engine_died, timeout=1.5)
            for name in NAMES:
                assert await check(channel, name) == NOT_SERVING, name
            await asyncio.wait_for(server.wait_stopped(), 1)
            # A request that still gets through is UNAVAILABLE (retry elsewhere), never INTERNAL.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await gateway_pb2_grpc.GatewayStub(channel).Generate(pb.GenerateRequest(text="x"))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def _config():
    return from_mapping({"server": {"host": "127.0.0.1", "port": 0, "grace_period_s": 1.0, "http": False}, "executor": {"name": "echo"}})


async def test_serve_returns_exit_code_3_when_the_engine_dies() -> None:
    engine = EchoExecutor()
    task = asyncio.ensure_future(app.serve(_config(), engine))
    assert await poll(lambda: engine.health() is Health.SERVING)
    engine.kill()
    assert await asyncio.wait_for(task, 5) == app.EXIT_ENGINE_DEAD == 3


async def test_serve_returns_0_on_sigterm() -> None:
    engine = EchoExecutor()
    task = asyncio.ensure_future(app.serve(_config(), engine))
    assert await poll(lambda: engine.health() is Health.SERVING)  # signal handlers are installed before start
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(task, 5) == 0


async def test_a_second_sigterm_during_the_drain_ends_it_at_once_and_exits_143(caplog) -> None:
    engine = EchoExecutor({"token_delay_s": 0.05})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = from_mapping({"server": {"host": "127.0.0.1", "port": port, "grace_period_s": 60.0, "http": False},
                        "executor": {"name": "echo"}})
    task = asyncio.ensure_future(app.serve(cfg, engine))
    assert await poll(lambda: engine.health() is Health.SERVING)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = gateway_pb2_grpc.GatewayStub(channel).GenerateStream(long_req(4000, request_id="long"))
        chunks = [await call.__aiter__().__anext__()]
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        statuses = watch.__aiter__()
        assert (await statuses.__anext__()).status == SERVING
        os.kill(os.getpid(), signal.SIGTERM)
        assert (await asyncio.wait_for(statuses.__anext__(), 5)).status == NOT_SERVING  # the drain began
        watch.cancel()
        assert not task.done()  # 60 s of grace: it would wait for the stream
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(task, 10) == 128 + signal.SIGTERM
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for chunk in call:
                chunks.append(chunk)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "second signal" in err.value.details()
    assert chunks[-1].finish_reason == pb.FINISH_REASON_ERROR
    assert [r.message for r in caplog.records if "second SIGTERM" in r.message] == [
        "second SIGTERM during the drain: ending it now and exiting with code 143"]
