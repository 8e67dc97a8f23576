"""Prometheus metrics: the HTTP endpoint (scraped with urllib) and exact values from the server's own registry."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from srv_helpers import SLOW, collect, long_req, open_stub, poll, running

from trt_gateway.executors.echo import EchoExecutor
from trt_gateway.v1 import gateway_pb2 as pb


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_endpoint_after_a_stream() -> None:
    port = free_port()
    async with running(server={"metrics_port": port}) as server, open_stub(server) as stub:
        chunks = await collect(stub.GenerateStream(pb.GenerateRequest(text="hello")))
        assert chunks[-1].finish_reason == pb.FINISH_REASON_STOP_TOKEN
        m = await asyncio.to_thread(scrape, port)

        def get(name: str, **labels: str) -> float | None:
            return m.get((name, frozenset(labels.items())))

        assert get("trt_gateway_requests_total", method="GenerateStream", code="OK") == 1
        assert get("trt_gateway_request_duration_seconds_count", method="GenerateStream") == 1
        assert get("trt_gateway_time_to_first_token_seconds_count", model="echo") == 1
        assert get("trt_gateway_time_to_first_token_seconds_sum", model="echo") > 0
        assert get("trt_gateway_inter_token_latency_seconds_count", model="echo") == 4  # 5 tokens, 4 gaps
        assert get("trt_gateway_prompt_tokens_total", model="echo") == 5
        assert get("trt_gateway_completion_tokens_total", model="echo") == 6  # with the EOS
        assert get("trt_gateway_queue_time_seconds_count") == 1
        assert get("trt_gateway_queue_depth") == 0
        assert get("trt_gateway_active_streams") == 0
        assert get("trt_gateway_inflight_requests") == 0
    with pytest.raises(urllib.error.URLError) as err:  # the endpoint goes away with the server: the port is closed
        await asyncio.to_thread(scrape, port)
    assert isinstance(err.value.reason, ConnectionRefusedError)
    async with running(server={"metrics_port": port}):  # and can be bound again (a restart on the same port)
        m = await asyncio.to_thread(scrape, port)
        assert ("trt_gateway_active_streams", frozenset()) in m


async def test_metrics_exact_values_from_registry() -> None:
    engine = EchoExecutor(SLOW)
    async with running(engine, admission={"max_inflight": 1, "max_queued": 0}) as server, open_stub(server) as stub:
        value = server.metrics.registry.get_sample_value
        call = stub.GenerateStream(long_req(6, request_id="live"))
        await call.__aiter__().__anext__()
        assert value("trt_gateway_active_streams") == 1
        assert value("trt_gateway_inflight_requests") == 1
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Generate(pb.GenerateRequest(text="rejected"))  # max_queued 0: refused at once
        assert value("trt_gateway_rejected_total", {"reason": "queue_full"}) == 1
        # Counted when the server's handler returns, which can be just after the client has read the status (seen
        # once on a loaded 2-core machine): wait for it rather than read it at once.
        refused = {"method": "Generate", "code": "RESOURCE_EXHAUSTED"}
        assert await poll(lambda: value("trt_gateway_requests_total", refused) == 1)
        rest = [c async for c in call]
        assert rest[-1].finish_reason == pb.FINISH_REASON_LENGTH
        assert await poll(lambda: value("trt_gateway_active_streams") == 0)
        assert value("trt_gateway_inflight_requests") == 0
        assert value("trt_gateway_requests_total", {"method": "GenerateStream", "code": "OK"}) == 1
        assert value("trt_gateway_completion_tokens_total", {"model": "echo"}) == 6
        assert value("trt_gateway_prompt_tokens_total", {"model": "echo"}) == 8
        assert value("trt_gateway_inter_token_latency_seconds_count", {"model": "echo"}) == 5
        assert value("trt_gateway_inter_token_latency_seconds_sum", {"model": "echo"}) >= 5 * 0.04

        # n=2 unary: both outputs count tokens; a failed validation counts under its code.
        await stub.Generate(pb.GenerateRequest(text="ab", n=2))
        assert value("trt_gateway_completion_tokens_total", {"model": "echo"}) == 6 + 2 * 3
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Generate(pb.GenerateRequest())
        assert value("trt_gateway_requests_total", {"method": "Generate", "code": "INVALID_ARGUMENT"}) == 1

        # A client cancel is counted as CANCELLED.
        call = stub.GenerateStream(long_req(100, request_id="cancel-me"))
        await call.__aiter__().__anext__()
        call.cancel()
        assert await poll(lambda: value("trt_gateway_requests_total", {"method": "GenerateStream", "code": "CANCELLED"}) == 1)
        assert await poll(lambda: value("trt_gateway_active_streams") == 0)


async def test_queue_time_histogram_counts_the_wait() -> None:
    engine = EchoExecutor(SLOW)
    async with running(engine, admission={"max_inflight": 1, "max_queued": 1}) as server, open_stub(server) as stub:
        value = server.metrics.registry.get_sample_value
        a = stub.GenerateStream(long_req(3))
        await a.__aiter__().__anext__()
        b = asyncio.ensure_future(stub.Generate(long_req(2)))
        assert await poll(lambda: value("trt_gateway_queue_depth") == 1)
        await collect(a)
        await b
        assert value("trt_gateway_queue_depth") == 0
        assert value("trt_gateway_queue_time_seconds_count") == 2
        assert value("trt_gateway_queue_time_seconds_sum") > 0.05  # b waited for a's remaining tokens
