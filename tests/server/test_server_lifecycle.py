"""Health, reflection, graceful shutdown (drain), executor death and `serve()`'s exit code."""

from __future__ import annotations

import asyncio
import os
import signal

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
        self.loaded = asyncio.Event()

    async def start(self) -> None:
        await self.loaded.wait()
        await super().start()


async def test_while_starting_health_is_not_serving_and_rpcs_are_unavailable() -> None:
    engine = SlowStart()
    cfg = from_mapping({"server": {"host": "127.0.0.1", "port": 0, "http": False}, "executor": {"name": "echo"}})
    server = GatewayServer(cfg, engine)
    starting = asyncio.ensure_future(server.start())
    try:
        assert await poll(lambda: server.port != 0)
        await asyncio.sleep(0.05)  # listening, executor still loading
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


async def test_stop_after_grace_cuts_long_streams_and_aborts_them() -> None:
    engine = EchoExecutor({"token_delay_s": 0.05})
    async with running(engine) as server, open_stub(server) as stub:
        call = stub.GenerateStream(long_req(500, request_id="endless"))
        await call.__aiter__().__anext__()
        await asyncio.wait_for(server.stop(0.2), 3)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await collect(call)
        assert err.value.code() != grpc.StatusCode.OK
        assert await poll(lambda: "endless" in engine.aborts or not engine._running)
        assert not engine._running


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
