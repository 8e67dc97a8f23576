"""Executor errors before and after the first chunk: chunks so far, a terminal ERROR chunk with the usage so far, then
the status from the error table; bugs become INTERNAL without leaking the exception text; neighbours unaffected."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from srv_helpers import FailingEcho, collect, md, open_stub, poll, running

from trt_gateway import errors
from trt_gateway.v1 import gateway_pb2 as pb

CASES = [
    (errors.ResourceExhausted("out of KV blocks", retry_after_s=0.25), grpc.StatusCode.RESOURCE_EXHAUSTED,
     "out of KV blocks"),
    (errors.Internal("executor step failed"), grpc.StatusCode.INTERNAL, "executor step failed"),
    (errors.EngineDead("the engine process exited"), grpc.StatusCode.UNAVAILABLE, "engine process exited"),
    (errors.InvalidArgument("prompt too long", field="text"), grpc.StatusCode.INVALID_ARGUMENT, "prompt too long"),
    (RuntimeError("secret user prompt"), grpc.StatusCode.INTERNAL, "internal error"),
]
IDS = ["resource-exhausted", "internal", "engine-dead", "invalid", "bug"]


async def read_all(call) -> tuple[list[pb.GenerateStreamResponse], grpc.aio.AioRpcError]:
    chunks: list[pb.GenerateStreamResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for chunk in call:
            chunks.append(chunk)
    return chunks, err.value


def check_status(err: grpc.aio.AioRpcError, error: BaseException, code: grpc.StatusCode, text: str) -> None:
    assert err.code() == code
    assert text in err.details()
    assert "secret" not in err.details()
    trailing = md(err.trailing_metadata())
    if isinstance(error, errors.GatewayError) and error.retry_after_s is not None:
        assert trailing["retry-after-ms"] == "250"
    if isinstance(error, errors.GatewayError) and error.field:
        assert trailing["error-field"] == error.field


@pytest.mark.parametrize(("error", "code", "text"), CASES, ids=IDS)
async def test_error_after_n_chunks(error, code, text) -> None:
    engine = FailingEcho(error, after=3)
    async with running(engine) as server, open_stub(server) as stub:
        call = stub.GenerateStream(pb.GenerateRequest(text="fail-after-three", request_id="e-1"))
        chunks, err = await read_all(call)
        *body, last = chunks  # the three tokens (in up to three chunks: coalescing may merge them), then ERROR
        assert "".join(c.text for c in body) == "fai" and [t for c in body for t in c.token_ids] == list(b"fai")
        assert all(c.finish_reason == pb.FINISH_REASON_UNSPECIFIED for c in body)
        assert last.request_id == "e-1" and last.index == 0
        assert last.finish_reason == pb.FINISH_REASON_ERROR
        assert last.usage.completion_tokens == 3
        assert not last.text and not last.token_ids
        check_status(err, error, code, text)
        # The server keeps serving, and nothing is left behind.
        assert await poll(lambda: len(server.servicer.registry) == 0 and server.servicer.admission.inflight == 0)
        r = await stub.Generate(pb.GenerateRequest(text="fine"))
        assert r.outputs[0].text == "fine"
        counted = server.metrics.registry.get_sample_value(
            "trt_gateway_requests_total", {"method": "GenerateStream", "code": code.name}
        )
        assert counted == 1


@pytest.mark.parametrize(("error", "code", "text"), CASES, ids=IDS)
async def test_error_before_first_chunk_is_status_only(error, code, text) -> None:
    engine = FailingEcho(error, after=0)
    async with running(engine) as server, open_stub(server) as stub:
        chunks, err = await read_all(stub.GenerateStream(pb.GenerateRequest(text="fail-now")))
        assert chunks == []
        check_status(err, error, code, text)
        with pytest.raises(grpc.aio.AioRpcError) as unary:
            await stub.Generate(pb.GenerateRequest(text="fail-now"))
        check_status(unary.value, error, code, text)


@pytest.mark.parametrize(("error", "code", "text"), CASES, ids=IDS)
async def test_unary_error_mid_generation_is_status_only(error, code, text) -> None:
    async with running(FailingEcho(error, after=2)) as server, open_stub(server) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Generate(pb.GenerateRequest(text="fail-later"))
        check_status(err.value, error, code, text)


async def test_error_with_n3_ends_every_output_and_aborts_the_rest() -> None:
    engine = FailingEcho(errors.ResourceExhausted("out of KV blocks"), after=2, options={"token_delay_s": 0.005})
    async with running(engine) as server, open_stub(server) as stub:
        chunks, err = await read_all(stub.GenerateStream(pb.GenerateRequest(text="fail-n", n=3, request_id="e-n")))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        finals = [c for c in chunks if c.finish_reason != pb.FINISH_REASON_UNSPECIFIED]
        assert sorted(c.index for c in finals) == [0, 1, 2]  # exactly one terminal chunk per output
        assert all(c.finish_reason == pb.FINISH_REASON_ERROR for c in finals)
        for c in finals:
            produced = sum(len(x.token_ids) for x in chunks if x.index == c.index)
            assert c.usage.completion_tokens == produced
        # The sub-requests that were still running are aborted in the executor.
        assert await poll(lambda: {"e-n/0", "e-n/1", "e-n/2"} & set(engine.aborts))
        assert await poll(lambda: not engine._running)


async def test_other_requests_are_unaffected_by_a_failing_one() -> None:
    engine = FailingEcho(errors.Internal("boom"), after=3, options={"token_delay_s": 0.01})
    async with running(engine) as server, open_stub(server) as stub:
        good = [asyncio.ensure_future(collect(stub.GenerateStream(pb.GenerateRequest(text=f"good {i}"))))
                for i in range(3)]
        bad = asyncio.ensure_future(read_all(stub.GenerateStream(pb.GenerateRequest(text="fail please"))))
        chunks, err = await bad
        assert err.code() == grpc.StatusCode.INTERNAL and chunks[-1].finish_reason == pb.FINISH_REASON_ERROR
        for i, task in enumerate(good):
            result = await task
            assert "".join(c.text for c in result) == f"good {i}"
            assert result[-1].finish_reason == pb.FINISH_REASON_STOP_TOKEN
