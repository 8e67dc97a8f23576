"""Issue #20, items 4, 6 and 7, on the native engine (the demo model) behind a real gateway, over gRPC and HTTP.

- constraints xgrammar compiles without complaint but that match nothing (an empty character class, a left-recursive
  rule) are INVALID_ARGUMENT naming the field, not INTERNAL at the first decoding step;
- choices holding NUL and regex / EBNF metacharacters are matched literally;
- tokenizing never runs on the event loop: long texts in the tokenizer threads, text that cannot fit the context
  window refused by its length before it is tokenized;
- grammar compiles run in the grammar backend's threads within their time budget, and a compile whose request ended
  before it started never runs;
- nobody's compile starves behind others' huge ones: a small constraint, a constraint compiled before and another
  tenant's compile all finish while one tenant's huge compiles still wait; identical constraints compile once.
  Asserted by order (which requests had finished when), never by wall-clock time.

Timing: one test measures event-loop stalls while four 1M-character texts are tokenized and asserts only that the
worst stall is well under the time one such tokenization takes (it used to be at least that: the loop did it).
"""

from __future__ import annotations

import asyncio
import random
import string
import threading
import time
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from gateway_testing import poll, running, target

from trt_gateway.config import from_mapping
from trt_gateway.executors.native import NativeExecutor
from trt_gateway.server.app import GatewayServer
from trt_gateway.v1 import gateway_pb2 as pb
from trt_gateway.v1 import gateway_pb2_grpc as pb_grpc

EMPTY_CLASS = r"[^\x00-\U0010FFFF]"  # as a client writes it: the regex escapes, not the characters
LEFT_RECURSIVE = 'root ::= root "a"'
BIG = {"max_guided_choices": 10_000, "max_guided_chars": 1_000_000}  # room for the slow compiles below
CHOICES = ["\x00", "a|b", "(x)*", '"q"', "\\", "[", ".", "\n"]


def native(**options: object) -> NativeExecutor:
    return NativeExecutor.from_config(from_mapping({"executor": {"name": "native", "options": options}}).executor)


@pytest.fixture
async def server() -> AsyncIterator[GatewayServer]:
    async with running(native(), server={"http": True, "http_port": 0}, limits=BIG) as s:
        yield s


@pytest.fixture
async def stub(server: GatewayServer) -> AsyncIterator[pb_grpc.GatewayStub]:
    options = [("grpc.max_receive_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(target(server), options=options) as channel:
        yield pb_grpc.GatewayStub(channel)


@pytest.fixture
async def http(server: GatewayServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}", timeout=60) as client:
        yield client


def guided_request(guided: pb.GuidedDecoding, **fields) -> pb.GenerateRequest:  # noqa: ANN003
    return pb.GenerateRequest(text="Pick one:", stopping=pb.StoppingCriteria(max_tokens=16), guided=guided, **fields)


def backend(server: GatewayServer):  # noqa: ANN201
    front = server.executor.front  # type: ignore[attr-defined]
    return front.engine.structured


# -- item 4 ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "guided, field, param",
    [
        (pb.GuidedDecoding(regex=EMPTY_CLASS), "guided.regex", ("guided_regex", EMPTY_CLASS)),
        (pb.GuidedDecoding(grammar=LEFT_RECURSIVE), "guided.grammar", ("guided_grammar", LEFT_RECURSIVE)),
    ],
)
async def test_constraints_that_match_nothing_are_invalid_argument(stub, http, guided, field, param) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Generate(guided_request(guided))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert field in (err.value.details() or "") and "matches no text" in (err.value.details() or "")
    r = await http.post("/v1/completions", json={"prompt": "Pick one:", "max_tokens": 16, param[0]: param[1]})
    assert r.status_code == 400 and r.json()["error"]["param"] == param[0], r.text
    ok = await stub.Generate(guided_request(pb.GuidedDecoding(choice=["fine"])))
    assert ok.outputs[0].text == "fine"


# -- item 7: escaping ----------------------------------------------------------------------------------------------


async def test_choices_with_nul_and_metacharacters_are_matched_literally(stub, http) -> None:
    for seed in range(6):
        msg = guided_request(pb.GuidedDecoding(choice=CHOICES), sampling=pb.SamplingParams(temperature=1.0, seed=seed))
        out = await stub.Generate(msg)
        assert out.outputs[0].text in CHOICES
    r = await http.post("/v1/completions", json={"prompt": "Pick one:", "max_tokens": 16, "guided_choice": CHOICES,
                                                "temperature": 1.0, "seed": 1})
    assert r.status_code == 200 and r.json()["choices"][0]["text"] in CHOICES, r.text


# -- item 6: the event loop ----------------------------------------------------------------------------------------


class LoopWatch:
    """The longest time a 5 ms sleep on the event loop overslept: how long the loop was kept from running."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.005)
            self.worst = max(self.worst, time.perf_counter() - start - 0.005)

    async def __aenter__(self) -> LoopWatch:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def test_long_texts_are_tokenized_off_the_event_loop(server, stub) -> None:
    text = "hello world " * 83_333  # 1M characters: under limits.max_prompt_chars, so Tokenize takes it
    tokenizer = server.executor.front._inputs.tokenizer  # type: ignore[attr-defined]
    start = time.perf_counter()
    expected = tokenizer.encode(text).ids
    one = time.perf_counter() - start  # what one tokenization costs here, now
    threads: set[str] = set()
    real = tokenizer.encode_batch

    def watched(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - the real tokenizer, observed
        threads.add(threading.current_thread().name)
        return real(*args, **kwargs)

    server.executor.front._inputs.tokenizer = _Spy(tokenizer, watched)  # type: ignore[attr-defined]
    async with LoopWatch() as watch:  # the gateway's loop: this test runs on it
        results = await asyncio.gather(*(stub.Tokenize(pb.TokenizeRequest(text=text)) for _ in range(4)))
    assert all(list(r.token_ids) == expected for r in results)
    assert threads and all(name.startswith("trt-gateway-tokenize") for name in threads), threads
    print(f"one 1M-character tokenization: {one:.3f} s; worst loop stall during four: {watch.worst:.3f} s")
    assert watch.worst < max(one / 2, 0.05)  # loose: on the loop, the worst stall was at least `one`


async def test_text_that_cannot_fit_is_refused_before_it_is_tokenized(server) -> None:
    from trt_gateway import errors
    from trt_gateway.types import GenerateRequest, Prompt

    front = server.executor.front  # type: ignore[attr-defined]
    calls: list[object] = []
    front._inputs.tokenizer = _Spy(front._inputs.tokenizer, lambda *a, **k: calls.append(a))
    # Straight to the engine (no server check in front): its own bound is the longest vocabulary entry.
    text = "z" * (front.facts.max_model_len * front._inputs.max_chars_per_token + 1)
    with pytest.raises(errors.InvalidArgument, match="longest token in the vocabulary") as err:
        async for _ in front.generate(GenerateRequest(request_id="long", model="demo", prompt=Prompt(text=text))):
            pass
    assert err.value.field == "text" and calls == []


class _Spy:
    """The tokenizer with `encode_batch` replaced; everything else passes through."""

    def __init__(self, inner: object, encode_batch) -> None:  # noqa: ANN001
        self._inner, self.encode_batch = inner, encode_batch

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


# -- item 7: the compile budget and cancellation -------------------------------------------------------------------


def many_choices(n: int = 6000) -> list[str]:
    rng = random.Random()  # fresh choices each time: xgrammar caches compiled constraints
    return ["".join(rng.choices(string.ascii_letters, k=20)) for _ in range(n)]


async def test_a_compile_over_its_budget_is_resource_exhausted_naming_it() -> None:
    async with running(native(guided_compile_timeout_s=0.05), limits=BIG) as server:
        async with grpc.aio.insecure_channel(target(server)) as channel:
            stub = pb_grpc.GatewayStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Generate(guided_request(pb.GuidedDecoding(choice=many_choices())))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "guided_compile_timeout_s" in (err.value.details() or "")
            assert (await stub.Generate(pb.GenerateRequest(text="plain", stopping=pb.StoppingCriteria(max_tokens=2))))


async def test_a_compile_whose_request_ended_before_it_started_never_runs() -> None:
    async with running(native(guided_compile_threads=1, guided_compile_timeout_s=300), limits=BIG) as server:
        grammars = backend(server)
        async with grpc.aio.insecure_channel(target(server)) as channel:
            stub = pb_grpc.GatewayStub(channel)
            slow = asyncio.ensure_future(stub.Generate(guided_request(pb.GuidedDecoding(choice=many_choices()))))
            assert await poll(lambda: grammars.started == 1, timeout=30)  # holds the one compile thread
            gone = stub.Generate(guided_request(pb.GuidedDecoding(choice=many_choices(500))))  # big: its lane
            assert await poll(lambda: grammars.submitted == 2, timeout=30)  # queued behind it
            gone.cancel()  # the client goes away while its compile waits
            await slow
            plain = await stub.Generate(pb.GenerateRequest(text="plain", stopping=pb.StoppingCriteria(max_tokens=2)))
            assert plain.outputs[0].usage.completion_tokens >= 1
            assert grammars.started == 1  # the cancelled request's compile was dropped, not run


# -- item 7: nobody starves behind others' huge compiles -----------------------------------------------------------
# One big-compile thread and no budget to run out: on a shared FIFO each request below would finish after every huge
# compile sent before it (checked against the code before the lanes: these tests failed there).

HUGE = 3000  # choices: about 1 s of compile each on one idle core


@pytest.fixture
async def one_big_lane() -> AsyncIterator[tuple[pb_grpc.GatewayStub, object]]:
    keys = {"api_keys": ["alice", "bob"]}
    async with running(native(guided_compile_threads=1, guided_compile_timeout_s=600), limits=BIG, server=keys) as s:
        async with grpc.aio.insecure_channel(target(s)) as channel:
            yield pb_grpc.GatewayStub(channel), backend(s)


def as_key(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


async def queue_huge(stub, grammars, count: int, key: str = "alice") -> list[asyncio.Future]:  # noqa: ANN001
    """`count` fresh huge compiles from `key`: the first holds the big lane's thread, the rest wait behind it."""
    base = grammars.submitted
    huge = []
    for i in range(count):
        msg = guided_request(pb.GuidedDecoding(choice=many_choices(HUGE)))
        huge.append(asyncio.ensure_future(stub.Generate(msg, metadata=as_key(key))))
        assert await poll(lambda i=i: grammars.submitted == base + i + 1, timeout=30)
    return huge


async def test_a_small_constraint_does_not_wait_behind_huge_compiles(one_big_lane) -> None:
    stub, grammars = one_big_lane
    huge = await queue_huge(stub, grammars, 3)
    small = ["yes", "no", "maybe", "later"]
    out = await stub.Generate(guided_request(pb.GuidedDecoding(choice=small)), metadata=as_key("alice"))
    assert out.outputs[0].text in small
    assert sum(h.done() for h in huge) < 2  # at most the one that held the thread: the other two still wait
    assert all(out.outputs[0].text for out in await asyncio.gather(*huge))


async def test_an_identical_constraint_compiles_once_and_later_as_a_cache_hit(one_big_lane) -> None:
    stub, grammars = one_big_lane
    [first] = await queue_huge(stub, grammars, 1)
    same = guided_request(pb.GuidedDecoding(choice=many_choices(HUGE)))
    before = grammars.submitted
    shared = [asyncio.ensure_future(stub.Generate(same, metadata=as_key("alice"))) for _ in range(3)]
    assert await poll(lambda: grammars.submitted == before + 3, timeout=30)
    await first
    await asyncio.gather(*shared)
    assert grammars.started == 2  # `first`, then `same` once for its three requests
    later = await queue_huge(stub, grammars, 2)  # a fresh huge compile holds the big lane, another waits
    again = await stub.Generate(same, metadata=as_key("bob"))
    assert again.outputs[0].text and not later[1].done()  # the known constraint did not queue behind them
    await asyncio.gather(*later)


async def test_tenants_take_turns_at_the_big_lane(one_big_lane) -> None:
    stub, grammars = one_big_lane
    alices = await queue_huge(stub, grammars, 3, "alice")
    [bobs] = await queue_huge(stub, grammars, 1, "bob")
    assert (await bobs).outputs[0].text
    assert not alices[2].done()  # bob's one compile went before alice's third, though sent after it
    await asyncio.gather(*alices)
