"""Typed errors, retries, deadlines and cancellation, against a real gateway, with the sync and the async client."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator

import pytest
from client_helpers import poll, serve

from trt_gateway import AsyncGatewayClient, GatewayClient, errors
from trt_gateway.executors.echo import EchoExecutor
from trt_gateway.server.app import GatewayServer
from trt_gateway.types import GenerateRequest, TokenDelta


class FailingEcho(EchoExecutor):
    """Echo that raises `error` on its first `fail_times` calls: before any delta, or after the first one."""

    def __init__(self, error: errors.GatewayError, *, fail_times: int = 10**6, after_first: bool = False) -> None:
        super().__init__()
        self.error, self.fail_times, self.after_first = error, fail_times, after_first
        self.calls = 0

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenDelta]:
        self.calls += 1
        failing = self.calls <= self.fail_times
        if failing and not self.after_first:
            raise self.error
        async with contextlib.aclosing(super().generate(request)) as deltas:
            async for delta in deltas:
                yield delta
                if failing:
                    raise self.error


def rejected(server: GatewayServer) -> float:
    return server.metrics.registry.get_sample_value("trt_gateway_rejected_total", {"reason": "queue_full"}) or 0.0


# -- typed errors -----------------------------------------------------------------------------------------------


async def test_invalid_argument_names_the_field(gw, connect):
    client = connect(gw)
    with pytest.raises(errors.InvalidArgument) as exc_info:
        await client.generate("x", temperature=-1.0)
    assert exc_info.value.field == "sampling.temperature" and "temperature" in exc_info.value.message
    with pytest.raises(errors.InvalidArgument) as exc_info:
        await client.generate()  # no input at all
    assert exc_info.value.field == "text"
    with pytest.raises(errors.InvalidArgument):
        async with client.stream("x", max_tokens=0):
            pass  # errors before the first chunk surface when the stream opens


async def test_not_found_and_unimplemented(gw, connect):
    client = connect(gw)
    with pytest.raises(errors.NotFound) as not_found:
        await client.generate("x", model="no-such-model")
    assert not_found.value.field == "model"
    with pytest.raises(errors.Unimplemented) as unimplemented:
        await client.generate("x", json_schema={"type": "object"})
    assert unimplemented.value.field == "guided.json_schema"
    with pytest.raises(errors.Unimplemented):
        async for _ in client.stream("x", regex="a+"):
            pass


def test_bad_keyword_is_a_type_error_before_any_rpc():
    client = AsyncGatewayClient("127.0.0.1:1")  # no event loop needed to build one
    with pytest.raises(TypeError, match="max_token"):
        client.stream("x", max_token=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="max_token"):
        GatewayClient("127.0.0.1:1").stream("x", max_token=3)  # type: ignore[call-arg]


# -- retries ----------------------------------------------------------------------------------------------------


async def test_resource_exhausted_honours_retry_after_and_the_deadline(connect):
    admission = {"max_inflight": 1, "max_queued": 0, "retry_after_s": 0.2}
    async with (
        serve(EchoExecutor({"token_delay_s": 0.05}), admission=admission) as server,
        AsyncGatewayClient(f"127.0.0.1:{server.port}") as other,
        other.stream("x" * 60) as blocker,  # holds the only slot for ~3 s
    ):
        await blocker.__anext__()
        no_retry = connect(server, max_retries=0)
        with pytest.raises(errors.ResourceExhausted) as exc_info:
            await no_retry.generate("y")
        assert exc_info.value.retry_after_s == pytest.approx(0.2) and rejected(server) == 1

        retrying = connect(server, max_retries=2)
        start = time.monotonic()
        with pytest.raises(errors.ResourceExhausted):
            await retrying.generate("y")
        assert time.monotonic() - start >= 0.4  # two waits of at least the 0.2 s hint
        assert rejected(server) == 1 + 3

        start = time.monotonic()
        with pytest.raises(errors.ResourceExhausted):
            async for _ in retrying.stream("y", timeout=0.1):  # the hint outlasts the deadline: no retry
                pass
        assert time.monotonic() - start < 0.2 and rejected(server) == 1 + 3 + 1


async def test_resource_exhausted_then_admitted_on_retry(connect):
    admission = {"max_inflight": 1, "max_queued": 0, "retry_after_s": 0.1}
    async with (
        serve(EchoExecutor({"token_delay_s": 0.02}), admission=admission) as server,
        AsyncGatewayClient(f"127.0.0.1:{server.port}") as other,
        other.stream("x" * 10) as blocker,  # ~0.2 s
    ):
        await blocker.__anext__()
        client = connect(server, max_retries=5)
        chunks = [c async for c in client.stream("ok")]
        assert "".join(c.text for c in chunks) == "ok" and rejected(server) >= 1


async def test_unreachable_server_is_unavailable_after_retries(connect):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    start = time.monotonic()
    with pytest.raises(errors.Unavailable):
        await connect(f"127.0.0.1:{port}", max_retries=2).models()
    assert time.monotonic() - start >= 0.05 + 0.1  # two backoffs (half-jittered 0.1 s, 0.2 s)


@pytest.mark.parametrize("rpc", ["generate", "stream"])
async def test_unavailable_before_the_first_token_is_retried(rpc, connect):
    engine = FailingEcho(errors.Unavailable("warming up"), fail_times=2)
    async with serve(engine) as server:
        client = connect(server, max_retries=3)
        if rpc == "generate":
            text = (await client.generate("ok")).text
        else:
            text = "".join([c.text async for c in client.stream("ok")])
        assert text == "ok" and engine.calls == 3


async def test_retries_are_bounded_by_max_retries(connect):
    engine = FailingEcho(errors.Unavailable("down"))
    async with serve(engine) as server:
        with pytest.raises(errors.Unavailable, match="down"):
            await connect(server, max_retries=2).generate("ok")
        assert engine.calls == 3


async def test_non_retryable_errors_are_not_retried(connect):
    engine = FailingEcho(errors.FailedPrecondition("no"))
    async with serve(engine) as server:
        with pytest.raises(errors.FailedPrecondition):
            await connect(server, max_retries=3).generate("ok")
        assert engine.calls == 1


async def test_no_retry_after_the_first_chunk_error_chunk_then_raise(connect):
    engine = FailingEcho(errors.Unavailable("engine restarting"), after_first=True)
    async with serve(engine) as server:
        client = connect(server, max_retries=3)
        chunks = []
        with pytest.raises(errors.Unavailable, match="engine restarting"):
            async for chunk in client.stream("hello", request_id="mid-1"):
                chunks.append(chunk)
        assert engine.calls == 1
        assert [c.text for c in chunks] == ["h", ""]
        assert chunks[-1].finish_reason == "error" and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 1


# -- deadlines and cancellation ----------------------------------------------------------------------------------


async def test_deadline_on_a_slow_stream_aborts_the_executor_request(connect):
    engine = EchoExecutor({"token_delay_s": 0.05})
    async with serve(engine) as server:
        client = connect(server)
        chunks = []
        start = time.monotonic()
        with pytest.raises(errors.DeadlineExceeded):
            async for chunk in client.stream("x" * 100, request_id="dl-1", timeout=0.2):
                chunks.append(chunk)
        assert 0.15 < time.monotonic() - start < 1.0 and 0 < len(chunks) < 10
        assert await poll(lambda: "dl-1" in engine.aborts)


async def test_client_default_timeout_applies_to_unary_calls(connect):
    async with serve(EchoExecutor({"token_delay_s": 0.05})) as server:
        with pytest.raises(errors.DeadlineExceeded):
            await connect(server, timeout=0.2).generate("x" * 100)


async def test_cancelling_an_async_generate_cancels_the_rpc():
    engine = EchoExecutor({"token_delay_s": 0.05})
    async with serve(engine) as server, AsyncGatewayClient(f"127.0.0.1:{server.port}") as client:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.generate("x" * 100, request_id="gc-1"), 0.2)
        assert await poll(lambda: "gc-1" in engine.aborts)


@pytest.mark.parametrize("how", ["break", "close", "with"])
async def test_leaving_a_stream_cancels_the_rpc_and_aborts_the_executor(how, connect):
    engine = EchoExecutor({"token_delay_s": 0.02})
    async with serve(engine) as server:
        client = connect(server)
        rid = f"cx-{how}"
        stream = client.stream("x" * 200, request_id=rid)
        if how == "break":
            assert len(await stream.take_then_break(2)) == 2
        elif how == "close":
            await stream.__anext__()
            await stream.close()
            assert [c async for c in stream] == []  # closed: nothing more, and no error
        else:
            async with stream:
                await stream.__anext__()
        assert await poll(lambda: rid in engine.aborts)
        assert await poll(lambda: len(server.servicer.registry) == 0)


def test_async_client_built_outside_a_loop_works_in_each_new_loop():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = AsyncGatewayClient(f"127.0.0.1:{port}")  # e.g. a framework object's __init__

    async def once() -> str:
        async with serve(server={"port": port}):
            return (await client.generate("hi")).text

    assert asyncio.run(once()) == "hi"
    assert asyncio.run(once()) == "hi"  # a second loop gets its own channel
    asyncio.run(client.close())
