"""End to end with speculative decoding: the real gRPC server, the native executor configured like a user would
(`[executor.speculative]`), the demo model with the demo draft model, and n-gram lookup.

The reference is the same server with the request opted out (`speculative.disable`): plain decoding.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest
from gateway_testing import running, target

from trt_gateway.config import from_mapping
from trt_gateway.executors import registry
from trt_gateway.executors.native import DEMO_MODEL
from trt_gateway.server.app import GatewayServer
from trt_gateway.v1 import gateway_pb2 as pb
from trt_gateway.v1 import gateway_pb2_grpc as pb_grpc

DEMO_DRAFT = DEMO_MODEL.parent / "draft"
PROMPT = "A list is a sequence of values. A list is"
QUOTING = (
    "Repeat: the quick brown fox jumps over the lazy dog. Again: the quick brown fox jumps over the lazy dog. Again:"
)


@asynccontextmanager
async def serving(mode: str) -> AsyncIterator[tuple[GatewayServer, pb_grpc.GatewayStub]]:
    spec = {"mode": mode, "num_draft_tokens": 4}
    if mode == "draft":
        spec["draft_model"] = str(DEMO_DRAFT)
    section = {"name": "native", "speculative": spec}
    executor = registry.create(from_mapping({"executor": section}).executor)  # as `trt-gateway serve` builds it
    async with running(executor, executor=section) as server:
        async with grpc.aio.insecure_channel(target(server)) as channel:
            yield server, pb_grpc.GatewayStub(channel)


def greedy(text: str, *, plain: bool = False, max_tokens: int = 48, **extra) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        text=text,
        sampling=pb.SamplingParams(temperature=0.0),
        stopping=pb.StoppingCriteria(max_tokens=max_tokens, ignore_eos=True, **extra),
        speculative=pb.SpeculativeOptions(disable=plain),
    )


async def stream(stub, request) -> tuple[list[int], str, list[pb.GenerateStreamResponse]]:
    chunks = [chunk async for chunk in stub.GenerateStream(request)]
    return [t for c in chunks for t in c.token_ids], "".join(c.text for c in chunks), chunks


@pytest.mark.parametrize("mode, prompt", [("draft", PROMPT), ("ngram", QUOTING)])
async def test_same_tokens_fewer_chunks_and_the_counts_are_reported(mode: str, prompt: str) -> None:
    async with serving(mode) as (server, stub):
        info = await stub.GetModelInfo(pb.GetModelInfoRequest())
        assert info.capabilities.speculative == mode and info.capabilities.num_draft_tokens == 4

        plain_ids, plain_text, plain_chunks = await stream(stub, greedy(prompt, plain=True))
        ids, text, chunks = await stream(stub, greedy(prompt))
        assert ids == plain_ids and text == plain_text
        assert max(len(c.token_ids) for c in chunks) > 1  # accepted drafts arrive together
        assert len(chunks) < len(plain_chunks)
        usage, plain_usage = chunks[-1].usage, plain_chunks[-1].usage
        assert usage.completion_tokens == plain_usage.completion_tokens == 48
        assert usage.draft_tokens > 0 and 0 < usage.accepted_tokens <= usage.draft_tokens
        assert plain_usage.draft_tokens == plain_usage.accepted_tokens == 0

        sample = server.metrics.registry.get_sample_value
        labels = {"model": "demo", "mode": mode}
        assert sample("trt_gateway_spec_draft_tokens_total", labels) == usage.draft_tokens
        assert sample("trt_gateway_spec_accepted_tokens_total", labels) == usage.accepted_tokens
        rate = sample("trt_gateway_spec_acceptance_rate", labels)
        assert rate == pytest.approx(usage.accepted_tokens / usage.draft_tokens)
        verifications = sample("trt_gateway_spec_accepted_length_count", labels)
        assert sample("trt_gateway_spec_accepted_length_sum", labels) == verifications + usage.accepted_tokens


async def test_a_stop_string_inside_an_accepted_run_ends_the_output_exactly() -> None:
    async with serving("ngram") as (_, stub):
        _, plain_text, _ = await stream(stub, greedy(QUOTING, plain=True))
        # A stop string that completes in the middle of the output, deep in a run n-gram lookup predicts well.
        start = len(plain_text) // 2
        stop = plain_text[start : start + 5]
        assert stop.strip() and plain_text.index(stop) > 0
        expected = plain_text[: plain_text.index(stop)]
        results = []
        for plain in (True, False):
            ids, text, chunks = await stream(stub, greedy(QUOTING, plain=plain, stop=[stop]))
            last = chunks[-1]
            assert text == expected
            assert last.finish_reason == pb.FINISH_REASON_STOP_STRING and last.matched_stop == stop
            assert last.usage.completion_tokens == len(ids)
            results.append((ids, last.usage.completion_tokens))
        assert results[0] == results[1]  # same tokens, same count: nothing past the stop leaked


async def test_draft_length_above_the_servers_is_refused() -> None:
    async with serving("draft") as (_, stub):
        request = greedy(PROMPT)
        request.speculative.num_draft_tokens = 5
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Generate(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "speculative.num_draft_tokens" in err.value.details() and "4" in err.value.details()
        request.speculative.num_draft_tokens = 2
        out = (await stub.Generate(request)).outputs[0]
        assert out.usage.completion_tokens == 48 and 0 < out.usage.draft_tokens
