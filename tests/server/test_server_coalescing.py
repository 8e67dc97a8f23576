"""Stream coalescing (server/coalesce.py): deltas that queue up while a stream's writer is busy leave as one chunk.

Over real gRPC on loopback. What is checked: a lagging reader gets fewer, larger chunks with exactly the same text,
token ids, logprobs and finish; nothing is ever held back (the first token, and each later one, leaves while the
executor waits); merged chunks respect the cap; a finish is always its output's last chunk; outputs of n > 1 never
mix. No test asserts a timing: where a test must wait, it waits on a condition or on an event it controls.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from srv_helpers import collect, open_stub, poll, running, target

from trt_gateway.config import ConfigError, from_mapping
from trt_gateway.executors.echo import EchoExecutor
from trt_gateway.server import coalesce
from trt_gateway.server.generation import Queued
from trt_gateway.types import Finish, FinishReason, GenerateRequest, PromptInfo, TokenDelta, TokenLogprob, Usage
from trt_gateway.v1 import gateway_pb2 as pb
from trt_gateway.v1 import gateway_pb2_grpc as pb_grpc


def req(text: str, max_tokens: int, **kwargs: Any) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        text=text, stopping=pb.StoppingCriteria(max_tokens=max_tokens, ignore_eos=True), **kwargs
    )


async def read_rest(call: Any) -> list[pb.GenerateStreamResponse]:
    """The remaining chunks of a call already read with `read()` (gRPC does not mix read() and iteration)."""
    chunks = []
    while (chunk := await call.read()) is not grpc.aio.EOF:
        chunks.append(chunk)
    return chunks


def expected_ids(text: str, n: int) -> list[int]:
    script = list(text.encode())
    return [script[i % len(script)] for i in range(n)]


def check_output(chunks: list[pb.GenerateStreamResponse], text: str, n: int, index: int = 0) -> None:
    """The output `index` is exactly the echo script for n tokens, with one LENGTH finish on its last chunk."""
    mine = [c for c in chunks if c.index == index and not c.queue_position]
    ids = [t for c in mine for t in c.token_ids]
    assert ids == expected_ids(text, n)
    assert "".join(c.text for c in mine) == bytes(ids).decode()
    assert [c.finish_reason for c in mine[:-1]] == [pb.FINISH_REASON_UNSPECIFIED] * (len(mine) - 1)
    assert mine[-1].finish_reason == pb.FINISH_REASON_LENGTH
    assert mine[-1].usage.completion_tokens == n
    assert mine[-1].HasField("timings")


class Counting(EchoExecutor):
    """Echo that counts the deltas it has handed out."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.produced = 0

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenDelta]:
        async for delta in super().generate(request):
            self.produced += 1
            yield delta


class Burst(EchoExecutor):
    """Echo whose first delta comes alone; the rest come only after `go` is set, all at once (no scheduling point
    between them, as an engine step that produced many tokens would deliver them)."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.go = asyncio.Event()

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenDelta]:
        deltas = [d async for d in super().generate(request)]
        yield deltas[0]
        await self.go.wait()
        for delta in deltas[1:]:
            yield delta


class LockStep(EchoExecutor):
    """Echo that hands out a delta only once the client has read the previous chunk (`read` is set by the test)."""

    def __init__(self) -> None:
        super().__init__()
        self.read = asyncio.Event()

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenDelta]:
        async for delta in super().generate(request):
            yield delta
            if delta.finish is None:
                await self.read.wait()
                self.read.clear()


# -- over gRPC -----------------------------------------------------------------------------------------------------


async def test_a_slow_reader_gets_fewer_larger_chunks_with_the_same_output() -> None:
    engine = Counting()
    text, n = "slow reader ", 1500
    async with running(engine, server={"stream_coalesce_tokens": 64}) as server:
        # A small receive window that never grows: the server's writes block as soon as the client stops reading.
        options = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]
        async with grpc.aio.insecure_channel(target(server), options=options) as channel:
            stub = pb_grpc.GatewayStub(channel)
            logprobs = pb.ResponseOptions(logprobs=True, top_logprobs=1)
            call = stub.GenerateStream(req(text, n, response=logprobs))
            # Read nothing until the executor has run ahead of what the window lets through (about 18 of these
            # chunks): the server's write is blocked and the pump keeps reading, up to the cap of 64 tokens.
            assert await poll(lambda: engine.produced >= 60, timeout=10)
            chunks = await collect(call)
    check_output(chunks, text, n)
    sizes = [len(c.token_ids) for c in chunks]
    assert len(chunks) < n  # one chunk per delta would be n + 1
    assert 20 <= max(sizes) <= 64  # what queued behind the blocked write left as one chunk
    # logprobs stay aligned with the tokens of their own chunk
    for c in chunks:
        assert [lp.token_id for lp in c.logprobs] == list(c.token_ids)
        assert all([a.token_id for a in lp.top_logprobs] == [lp.token_id] for lp in c.logprobs)


async def test_without_coalescing_every_delta_is_its_own_chunk() -> None:
    engine = Burst()
    engine.go.set()
    async with running(engine, server={"stream_coalesce_tokens": 1}) as server, open_stub(server) as stub:
        chunks = await collect(stub.GenerateStream(req("abc", 100)))
    check_output(chunks, "abc", 100)
    assert [len(c.token_ids) for c in chunks] == [1] * 100 + [0]  # 100 tokens, then the finish delta


async def test_the_first_token_is_never_held_back() -> None:
    engine = Burst()
    async with running(engine) as server, open_stub(server) as stub:
        call = stub.GenerateStream(req("first", 100))
        # The executor sends nothing more until `go`: were the first token held back for company, this would hang.
        first = await asyncio.wait_for(call.read(), timeout=10)
        assert list(first.token_ids) == [ord("f")] and first.text == "f"
        engine.go.set()
        chunks = [first, *await read_rest(call)]
    check_output(chunks, "first", 100)


async def test_a_reader_that_keeps_up_gets_every_delta_at_once() -> None:
    engine = LockStep()
    async with running(engine) as server, open_stub(server) as stub:
        call = stub.GenerateStream(req("step", 20))
        chunks = []
        for _ in range(21):  # each token leaves alone: the executor yields the next one only after it was read
            chunks.append(await asyncio.wait_for(call.read(), timeout=10))
            engine.read.set()
        assert await call.read() is grpc.aio.EOF
    check_output(chunks, "step", 20)
    assert [len(c.token_ids) for c in chunks] == [1] * 20 + [0]


async def test_a_burst_is_merged_up_to_the_cap_and_the_finish_is_last() -> None:
    engine = Burst()
    async with running(engine, server={"stream_coalesce_tokens": 16}) as server, open_stub(server) as stub:
        call = stub.GenerateStream(req("burst!", 150))
        first = await call.read()
        engine.go.set()
        chunks = [first, *await read_rest(call)]
    check_output(chunks, "burst!", 150)
    sizes = [len(c.token_ids) for c in chunks]
    assert sizes[0] == 1 and max(sizes) <= 16
    assert len(chunks) <= 12  # 149 queued tokens and the finish in chunks of up to 16, not 150 chunks


async def test_n_outputs_are_merged_separately_and_each_finishes_last() -> None:
    engine = Burst()
    engine.go.set()
    async with running(engine, server={"stream_coalesce_tokens": 32}) as server, open_stub(server) as stub:
        chunks = await collect(stub.GenerateStream(req("two", 90, n=2)))
    for index in (0, 1):
        check_output(chunks, "two", 90, index)
    last_of = {c.index: i for i, c in enumerate(chunks)}
    assert all(chunks[last_of[i]].finish_reason == pb.FINISH_REASON_LENGTH for i in (0, 1))


async def test_queue_positions_are_never_merged() -> None:
    engine = Burst()
    async with running(engine, admission={"max_inflight": 1}) as server, open_stub(server) as stub:
        first = stub.GenerateStream(req("a", 50))
        await first.read()  # holds the only slot until `go`
        waiting = stub.GenerateStream(req("b", 50, response=pb.ResponseOptions(queue_position=True)))
        position = await waiting.read()
        assert position.queue_position == 1 and not position.token_ids
        engine.go.set()
        rest = await read_rest(waiting)
        await read_rest(first)
    assert all(not c.queue_position for c in rest)
    check_output(rest, "b", 50)


async def test_a_stalled_reader_is_aborted_with_coalescing_on() -> None:
    engine = EchoExecutor({"max_context": 60_000})
    config = {"server": {"stall_timeout_s": 0.5}, "limits": {"max_tokens": 50_000}}
    async with running(engine, **config) as server:
        async with grpc.aio.insecure_channel(target(server), options=[("grpc.http2.bdp_probe", 0)]) as channel:
            stub = pb_grpc.GatewayStub(channel)
            call = stub.GenerateStream(req("x" * 200, 50_000, request_id="stalled"))
            await call.initial_metadata()
            # Read nothing: even 64-token chunks fill the 64 KiB window long before 50,000 tokens.
            assert await poll(lambda: "stalled" in engine.aborts, timeout=20)
            call.cancel()


def test_the_cap_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="stream_coalesce_tokens"):
        from_mapping({"server": {"stream_coalesce_tokens": 0}})


# -- merge, on its own ---------------------------------------------------------------------------------------------


def tok(t: int, finish: Finish | None = None, prompt: PromptInfo | None = None) -> TokenDelta:
    return TokenDelta(text=chr(t), token_ids=(t,), logprobs=(TokenLogprob(t, chr(t), -t / 100),), finish=finish,
                      prompt=prompt)


LENGTH = Finish(FinishReason.LENGTH, Usage(completion_tokens=3))


def test_merge_joins_one_outputs_run_and_keeps_logprobs_aligned() -> None:
    prompt = PromptInfo(num_tokens=2, token_ids=(1, 2))
    merged = coalesce.merge([(0, tok(97, prompt=prompt)), (0, tok(98)), (0, tok(99, finish=LENGTH))], 64)
    assert len(merged) == 1
    index, delta = merged[0]
    assert index == 0 and delta.text == "abc" and delta.token_ids == (97, 98, 99)
    assert [lp.token_id for lp in delta.logprobs] == [97, 98, 99]
    assert delta.prompt == prompt and delta.finish == LENGTH


def test_merge_respects_the_cap_and_never_joins_anything_after_a_finish() -> None:
    items = [(0, tok(97 + i)) for i in range(5)]
    assert [len(d.token_ids) for _, d in coalesce.merge(items, 2)] == [2, 2, 1]
    after_finish = coalesce.merge([(0, tok(97, finish=LENGTH)), (0, tok(98))], 64)
    assert [d.finish for _, d in after_finish] == [LENGTH, None]


def test_merge_keeps_outputs_apart_and_passes_other_items_through() -> None:
    items: list[tuple[int, Any]] = [(-1, Queued(2)), (-1, Queued(1)), (0, tok(97)), (1, tok(120)), (0, tok(98)),
                                    (1, tok(121, finish=LENGTH))]
    merged = coalesce.merge(items, 64)
    assert merged[:2] == [(-1, Queued(2)), (-1, Queued(1))]
    assert [(i, d.text) for i, d in merged[2:]] == [(0, "ab"), (1, "xy")]
    assert merged[3][1].finish == LENGTH


def test_a_delta_larger_than_the_cap_is_not_split() -> None:
    big = TokenDelta(text="abcd", token_ids=(97, 98, 99, 100))
    assert coalesce.merge([(0, tok(96)), (0, big), (0, tok(101))], 2) == [(0, tok(96)), (0, big), (0, tok(101))]
