"""End to end: the real gRPC server, the native executor, the engine thread, a tiny random Llama with the demo tokenizer.

Greedy output through the whole stack must equal HF transformers' `generate`; cancellation and Abort must give back
every KV block; a dead engine must surface as UNAVAILABLE and health DEAD.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import torch
from gateway_testing import poll, running, target
from transformers import LlamaForCausalLM

from trt_gateway.executors.base import Health
from trt_gateway.executors.native import NativeExecutor
from trt_gateway.server.app import GatewayServer
from trt_gateway.v1 import gateway_pb2 as pb
from trt_gateway.v1 import gateway_pb2_grpc as pb_grpc

PROMPTS = ["The for statement", "def main():", "A list is", "Exceptions are raised when"]


@pytest.fixture
async def server(tiny: tuple[Path, LlamaForCausalLM]) -> AsyncIterator[GatewayServer]:
    executor = NativeExecutor(tiny[0], options={"max_num_seqs": 4, "max_num_batched_tokens": 64})
    async with running(executor) as srv:
        yield srv


@pytest.fixture
async def stub(server: GatewayServer) -> AsyncIterator[pb_grpc.GatewayStub]:
    async with grpc.aio.insecure_channel(target(server)) as channel:
        yield pb_grpc.GatewayStub(channel)


def engine_of(server: GatewayServer):  # noqa: ANN201 - the LLMEngine behind the executor
    return server.executor.front.engine  # type: ignore[attr-defined]


def greedy(prompt: str, max_tokens: int = 24, **kw: object) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        text=prompt,
        sampling=pb.SamplingParams(temperature=0.0),
        stopping=pb.StoppingCriteria(max_tokens=max_tokens, ignore_eos=True),
        **kw,  # type: ignore[arg-type]
    )


async def test_greedy_through_the_gateway_matches_hf_generate(stub, tiny) -> None:
    _, model = tiny
    for prompt in PROMPTS[:2]:
        ids = list((await stub.Tokenize(pb.TokenizeRequest(text=prompt))).token_ids)
        chunks = [c async for c in stub.GenerateStream(greedy(prompt))]
        got = [t for c in chunks for t in c.token_ids]
        with torch.no_grad():
            ref = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False, min_new_tokens=24)
        assert got == ref[0, len(ids):].tolist()
        assert chunks[-1].finish_reason == pb.FINISH_REASON_LENGTH
        assert chunks[-1].usage.prompt_tokens == len(ids) and chunks[-1].usage.completion_tokens == 24


async def test_concurrent_requests_match_solo_runs(stub) -> None:
    solo = [(await stub.Generate(greedy(p))).outputs[0].token_ids for p in PROMPTS]
    together = await asyncio.gather(*(stub.Generate(greedy(p)) for p in PROMPTS))
    assert [r.outputs[0].token_ids for r in together] == solo


async def test_prefix_cache_hit_is_reported_and_output_unchanged(stub) -> None:
    prompt = "The for statement is used to iterate over the elements of a sequence such as a string or a list"
    first = await stub.Generate(greedy(prompt))
    second = await stub.Generate(greedy(prompt))
    assert second.outputs[0].token_ids == first.outputs[0].token_ids
    assert second.usage.cached_tokens > 0


async def test_stop_string_cuts_text_and_never_leaks_a_partial_stop(stub) -> None:
    full = (await stub.Generate(greedy(PROMPTS[0], max_tokens=40))).outputs[0].text
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert stop.strip(), "pick a stop that is visible text"
    request = greedy(PROMPTS[0], max_tokens=40)
    request.stopping.stop.append(stop)
    chunks = [c async for c in stub.GenerateStream(request)]
    text = "".join(c.text for c in chunks)
    assert text == full[: full.index(stop)]
    assert chunks[-1].finish_reason == pb.FINISH_REASON_STOP_STRING and chunks[-1].matched_stop == stop


async def test_seeded_sampling_is_reproducible(stub) -> None:
    def req(seed: int) -> pb.GenerateRequest:
        return pb.GenerateRequest(
            text=PROMPTS[1], sampling=pb.SamplingParams(temperature=1.0, top_k=50, seed=seed),
            stopping=pb.StoppingCriteria(max_tokens=16, ignore_eos=True),
        )

    a, b, c = await asyncio.gather(stub.Generate(req(7)), stub.Generate(req(7)), stub.Generate(req(8)))
    assert a.outputs[0].token_ids == b.outputs[0].token_ids
    assert a.outputs[0].token_ids != c.outputs[0].token_ids


async def test_logprobs_chat_and_prompt_ids(stub) -> None:
    r = await stub.Generate(
        pb.GenerateRequest(
            messages=[pb.ChatMessage(role="user", content="What is a list?")],
            sampling=pb.SamplingParams(temperature=0.0),
            stopping=pb.StoppingCriteria(max_tokens=4, ignore_eos=True),
            response=pb.ResponseOptions(top_logprobs=3, prompt_token_ids=True),
        )
    )
    out = r.outputs[0]
    assert len(out.logprobs) == 4
    for lp, token in zip(out.logprobs, out.token_ids, strict=True):
        assert lp.token_id == token and len(lp.top_logprobs) == 3
        assert lp.top_logprobs[0].token_id == token  # greedy picks the most likely token
        assert lp.logprob <= 0.0
    rendered = (await stub.Tokenize(pb.TokenizeRequest(messages=[pb.ChatMessage(role="user", content="What is a list?")])))
    assert list(r.prompt.token_ids) == list(rendered.token_ids)


async def test_prompt_over_the_context_window_is_invalid_argument(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(pb.GenerateRequest(token_ids=[5] * 300))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_client_cancel_frees_every_kv_block_within_one_engine_step(server, stub) -> None:
    engine = engine_of(server)
    total = engine.num_total_blocks
    steps, aborted_at, freed_at = [0], [], []
    real_step, real_abort = engine.step, engine.abort

    def counting_step():  # noqa: ANN202
        out = real_step()
        steps[0] += 1
        if aborted_at and not freed_at and engine.num_free_blocks == total:
            freed_at.append(steps[0])
        return out

    def recording_abort(request_id: str) -> None:
        aborted_at.append(steps[0])  # the abort reaches the engine now; the next step must free the blocks
        real_abort(request_id)

    engine.step, engine.abort = counting_step, recording_abort
    call = stub.GenerateStream(greedy(PROMPTS[0], max_tokens=200))
    async for _ in call:
        break
    assert engine.num_free_blocks < total
    call.cancel()
    assert await poll(lambda: bool(freed_at))
    assert freed_at[0] - aborted_at[0] <= 1, (aborted_at, freed_at)
    assert not engine.has_unfinished()


async def test_abort_rpc_ends_stream_cancelled_and_frees_blocks(server, stub) -> None:
    engine = engine_of(server)
    call = stub.GenerateStream(greedy(PROMPTS[0], max_tokens=200, request_id="to-abort"))
    chunks = []
    async for chunk in call:
        chunks.append(chunk)
        if len(chunks) == 2:
            assert (await stub.Abort(pb.AbortRequest(request_id="to-abort"))).found
    assert chunks[-1].finish_reason == pb.FINISH_REASON_CANCELLED
    assert await call.code() == grpc.StatusCode.OK
    assert await poll(lambda: engine.num_free_blocks == engine.num_total_blocks)


async def test_engine_death_is_unavailable_and_health_dead(server, stub) -> None:
    engine = engine_of(server)

    def broken_step() -> list:
        raise RuntimeError("simulated device fault")

    engine.step = broken_step
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(greedy(PROMPTS[0]))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert server.executor.health() is Health.DEAD
    assert await poll(lambda: server.engine_died)


async def test_out_of_memory_fails_only_that_step_and_the_server_keeps_serving(server, stub) -> None:
    runner = engine_of(server).model_runner
    real_launch = runner.launch
    calls = {"n": 0}

    def launch_once_oom(scheduled, after=None):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("simulated: CUDA out of memory")
        return real_launch(scheduled, after)

    runner.launch = launch_once_oom
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(greedy(PROMPTS[0]))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (await stub.Generate(greedy(PROMPTS[1]))).outputs[0].finish_reason == pb.FINISH_REASON_LENGTH
    assert server.executor.health() is Health.SERVING
    engine = engine_of(server)
    assert engine.num_free_blocks == engine.num_total_blocks


async def test_engine_death_mid_stream_ends_in_flight_streams_unavailable(server, stub) -> None:
    engine = engine_of(server)
    call = stub.GenerateStream(greedy(PROMPTS[0], max_tokens=200))
    first = await call.read()
    assert first.token_ids

    def broken_step() -> list:
        raise RuntimeError("simulated worker crash")

    engine.step = broken_step
    rest = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        while (msg := await call.read()) is not grpc.aio.EOF:
            rest.append(msg)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert rest and rest[-1].finish_reason == pb.FINISH_REASON_ERROR  # the terminal chunk before the status
    assert await poll(lambda: server.engine_died)
