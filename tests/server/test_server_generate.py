"""Happy paths of every generation RPC, over real gRPC on loopback with the echo executor (token id = UTF-8 byte)."""

from __future__ import annotations

import asyncio
import re

import grpc
import pytest
from srv_helpers import collect, md, open_stub, running, text_req

from trt_gateway.executors.echo import EOS, VOCAB_SIZE, EchoExecutor, render_chat
from trt_gateway.types import ChatMessage
from trt_gateway.v1 import gateway_pb2 as pb

Stop = pb.StoppingCriteria


def stream_text(chunks: list[pb.GenerateStreamResponse], index: int = 0) -> str:
    return "".join(c.text for c in chunks if c.index == index)


def stream_ids(chunks: list[pb.GenerateStreamResponse], index: int = 0) -> list[int]:
    return [t for c in chunks if c.index == index for t in c.token_ids]


# -- Generate ------------------------------------------------------------------------------------------------------


async def test_generate_text(stub) -> None:
    r = await stub.Generate(text_req("hello"))
    assert len(r.outputs) == 1
    out = r.outputs[0]
    assert out.index == 0
    assert out.text == "hello"
    assert list(out.token_ids) == list(b"hello")
    assert out.finish_reason == pb.FINISH_REASON_STOP_TOKEN
    assert out.HasField("matched_stop_token_id") and out.matched_stop_token_id == EOS
    assert out.matched_stop == ""
    assert out.usage.prompt_tokens == 5
    assert out.usage.completion_tokens == 6  # five bytes and the EOS
    assert r.usage.prompt_tokens == 5 and r.usage.completion_tokens == 6
    assert re.fullmatch(r"[0-9a-f]{32}", r.request_id)
    assert r.timings.total_time_ms > 0
    assert 0 < r.timings.time_to_first_token_ms <= r.timings.total_time_ms
    assert not r.HasField("prompt")  # not asked for
    assert not out.logprobs  # not asked for


async def test_generate_unicode_text_roundtrips(stub) -> None:
    r = await stub.Generate(text_req("héllo ✓"))
    assert r.outputs[0].text == "héllo ✓"
    assert r.usage.prompt_tokens == len("héllo ✓".encode())


async def test_generate_token_ids(stub) -> None:
    r = await stub.Generate(pb.GenerateRequest(token_ids=list(b"hi!")))
    assert r.outputs[0].text == "hi!"
    assert list(r.outputs[0].token_ids) == list(b"hi!")
    assert r.usage.prompt_tokens == 3


async def test_generate_messages_use_chat_template(stub) -> None:
    msgs = [pb.ChatMessage(role="system", content="be brief"), pb.ChatMessage(role="user", content="hi")]
    expected = render_chat([ChatMessage(m.role, m.content) for m in msgs])
    assert expected == "system: be brief\nuser: hi\nassistant: "
    r = await stub.Generate(pb.GenerateRequest(messages=msgs))
    assert r.outputs[0].text == expected
    assert r.usage.prompt_tokens == len(expected.encode())


async def test_generate_n3_outputs_tagged_by_index(stub) -> None:
    r = await stub.Generate(text_req("abc", n=3))
    assert [o.index for o in r.outputs] == [0, 1, 2]
    assert all(o.text == "abc" and o.finish_reason == pb.FINISH_REASON_STOP_TOKEN for o in r.outputs)
    assert r.usage.prompt_tokens == 3  # counted once
    assert r.usage.completion_tokens == 3 * 4


async def test_stream_n3_each_index_complete_and_finished_once(stub) -> None:
    chunks = await collect(stub.GenerateStream(text_req("abcd", n=3)))
    for i in range(3):
        assert stream_text(chunks, i) == "abcd"
        finals = [c for c in chunks if c.index == i and c.finish_reason != pb.FINISH_REASON_UNSPECIFIED]
        assert len(finals) == 1 and finals[0] is [c for c in chunks if c.index == i][-1]
        assert finals[0].usage.completion_tokens == 5
    assert {c.index for c in chunks} == {0, 1, 2}
    assert len({c.request_id for c in chunks}) == 1


async def test_generate_logprobs(stub) -> None:
    r = await stub.Generate(text_req("abc", response=pb.ResponseOptions(logprobs=True)))
    lps = r.outputs[0].logprobs
    assert [lp.token_id for lp in lps] == list(b"abc")
    assert [lp.token for lp in lps] == ["a", "b", "c"]
    assert all(not lp.top_logprobs for lp in lps)


async def test_generate_top_logprobs_implies_logprobs(stub) -> None:
    r = await stub.Generate(text_req("abc", response=pb.ResponseOptions(top_logprobs=1)))
    lps = r.outputs[0].logprobs
    assert [lp.token_id for lp in lps] == list(b"abc")
    assert all(len(lp.top_logprobs) == 1 and lp.top_logprobs[0].token_id == lp.token_id for lp in lps)


async def test_stream_logprobs_per_chunk(stub) -> None:
    chunks = await collect(stub.GenerateStream(text_req("ab", response=pb.ResponseOptions(logprobs=True))))
    assert [lp.token_id for c in chunks for lp in c.logprobs] == list(b"ab")
    for c in chunks:
        assert [lp.token_id for lp in c.logprobs] == list(c.token_ids)


async def test_generate_prompt_token_ids_and_echo(stub) -> None:
    r = await stub.Generate(text_req("hey", response=pb.ResponseOptions(prompt_token_ids=True, echo=True)))
    assert r.HasField("prompt")
    assert list(r.prompt.token_ids) == list(b"hey")
    assert r.prompt.text == "hey"
    assert r.prompt.num_tokens == 3
    r = await stub.Generate(text_req("hey", response=pb.ResponseOptions(echo=True)))
    assert r.prompt.text == "hey" and not r.prompt.token_ids


async def test_stream_prompt_info_on_first_chunk_only(stub) -> None:
    chunks = await collect(
        stub.GenerateStream(text_req("hey", response=pb.ResponseOptions(prompt_token_ids=True, echo=True)))
    )
    assert chunks[0].HasField("prompt")
    assert list(chunks[0].prompt.token_ids) == list(b"hey") and chunks[0].prompt.text == "hey"
    assert not any(c.HasField("prompt") for c in chunks[1:])
    assert stream_text(chunks) == "hey"


@pytest.mark.parametrize(
    ("text", "stopping", "expected", "reason", "matched"),
    [
        ("hello world", Stop(stop=["wor"]), "hello ", pb.FINISH_REASON_STOP_STRING, "wor"),
        ("hello world", Stop(stop=["wor"], include_stop=True), "hello wor", pb.FINISH_REASON_STOP_STRING, "wor"),
        ("hello world", Stop(stop=["xyz", "lo w", "o"]), "hell", pb.FINISH_REASON_STOP_STRING, "o"),
        ("hello", Stop(stop=["lox"]), "hello", pb.FINISH_REASON_STOP_TOKEN, ""),  # held-back "lo" is flushed
        ("hello", Stop(max_tokens=3), "hel", pb.FINISH_REASON_LENGTH, ""),
        ("hello", Stop(max_tokens=5), "hello", pb.FINISH_REASON_LENGTH, ""),
        ("hello", Stop(max_tokens=12, ignore_eos=True), "hellohellohe", pb.FINISH_REASON_LENGTH, ""),
        ("hello", Stop(max_tokens=5, stop=["lo"]), "hel", pb.FINISH_REASON_STOP_STRING, "lo"),
    ],
)
async def test_generate_stopping(stub, text, stopping, expected, reason, matched) -> None:
    r = await stub.Generate(pb.GenerateRequest(text=text, stopping=stopping))
    out = r.outputs[0]
    assert out.text == expected
    assert out.finish_reason == reason
    assert out.matched_stop == matched
    if reason == pb.FINISH_REASON_LENGTH:
        assert out.usage.completion_tokens == stopping.max_tokens
        assert not out.HasField("matched_stop_token_id")
    # The stream of the same request concatenates to the same text and ends the same way.
    chunks = await collect(stub.GenerateStream(pb.GenerateRequest(text=text, stopping=stopping)))
    assert stream_text(chunks) == expected
    assert chunks[-1].finish_reason == reason and chunks[-1].matched_stop == matched
    assert chunks[-1].usage.completion_tokens == out.usage.completion_tokens


async def test_stop_string_never_emitted_partially_in_stream(stub) -> None:
    chunks = await collect(stub.GenerateStream(text_req("abcabd", stopping=Stop(stop=["abd"]))))
    emitted = ""
    for c in chunks:
        emitted += c.text
        assert "abd" not in emitted
    assert emitted == "abc"


async def test_stop_token_ids(stub) -> None:
    r = await stub.Generate(text_req("hello", stopping=Stop(stop_token_ids=[ord("l")])))
    out = r.outputs[0]
    assert out.text == "he"
    assert list(out.token_ids) == list(b"he")
    assert out.finish_reason == pb.FINISH_REASON_STOP_TOKEN
    assert out.matched_stop_token_id == ord("l")
    assert out.usage.completion_tokens == 3


async def test_stop_token_ids_include_stop(stub) -> None:
    r = await stub.Generate(text_req("hello", stopping=Stop(stop_token_ids=[ord("l")], include_stop=True)))
    out = r.outputs[0]
    assert out.text == "hel"
    assert list(out.token_ids) == list(b"hel")
    assert out.matched_stop_token_id == ord("l")


async def test_max_tokens_default_applies() -> None:
    async with running(limits={"default_max_tokens": 4}) as server:
        async with open_stub(server) as stub:
            r = await stub.Generate(text_req("abcdefgh"))
    assert r.outputs[0].text == "abcd"
    assert r.outputs[0].finish_reason == pb.FINISH_REASON_LENGTH


# -- GenerateStream ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        text_req("The quick brown fox"),
        text_req("héllo wörld ✓✓", stopping=Stop(stop=["wö"])),
        text_req("abc", stopping=Stop(max_tokens=10, ignore_eos=True)),
        pb.GenerateRequest(messages=[pb.ChatMessage(role="user", content="hi")]),
    ],
    ids=["plain", "unicode-stop", "ignore-eos", "chat"],
)
async def test_stream_deltas_concatenate_to_unary_text(stub, request_) -> None:
    unary = await stub.Generate(request_)
    chunks = await collect(stub.GenerateStream(request_))
    assert stream_text(chunks) == unary.outputs[0].text
    assert stream_ids(chunks) == list(unary.outputs[0].token_ids)
    last = chunks[-1]
    assert last.finish_reason == unary.outputs[0].finish_reason != pb.FINISH_REASON_UNSPECIFIED
    assert last.HasField("usage") and last.usage == unary.outputs[0].usage
    assert last.HasField("timings")
    assert last.timings.total_time_ms > 0
    assert 0 < last.timings.time_to_first_token_ms <= last.timings.total_time_ms
    for c in chunks[:-1]:
        assert c.finish_reason == pb.FINISH_REASON_UNSPECIFIED
        assert not c.HasField("usage") and not c.HasField("timings")


async def test_stream_status_ok_and_request_id_generated(stub) -> None:
    call = stub.GenerateStream(text_req("hi"))
    chunks = await collect(call)
    assert await call.code() == grpc.StatusCode.OK
    rid = md(await call.initial_metadata())["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert all(c.request_id == rid for c in chunks)
    other = await collect(stub.GenerateStream(text_req("hi")))
    assert other[0].request_id != rid  # a fresh one per call


async def test_request_id_from_field(stub) -> None:
    call = stub.GenerateStream(text_req("hi", request_id="req-1.a:B_2"), metadata=(("x-request-id", "from-md"),))
    chunks = await collect(call)
    assert {c.request_id for c in chunks} == {"req-1.a:B_2"}  # the field wins over the metadata
    assert md(await call.initial_metadata())["x-request-id"] == "req-1.a:B_2"


async def test_request_id_from_metadata(stub) -> None:
    call = stub.GenerateStream(text_req("hi"), metadata=(("x-request-id", "from-md-7"),))
    chunks = await collect(call)
    assert {c.request_id for c in chunks} == {"from-md-7"}
    assert md(await call.initial_metadata())["x-request-id"] == "from-md-7"


async def test_unary_request_id_field_metadata_and_generated(stub) -> None:
    call = stub.Generate(text_req("hi", request_id="u-1"))
    assert (await call).request_id == "u-1"
    assert md(await call.initial_metadata())["x-request-id"] == "u-1"
    call = stub.Generate(text_req("hi"), metadata=(("x-request-id", "u-md"),))
    assert (await call).request_id == "u-md"
    r = await stub.Generate(text_req("hi"))
    assert re.fullmatch(r"[0-9a-f]{32}", r.request_id)


async def test_request_id_reusable_after_finish(stub) -> None:
    for _ in range(3):
        r = await stub.Generate(text_req("hi", request_id="same"))
        assert r.outputs[0].text == "hi"


async def test_concurrent_streams_do_not_mix(stub) -> None:
    texts = [f"stream number {i} " * 3 for i in range(12)]

    async def one(t: str) -> tuple[str, set[str]]:
        chunks = await collect(stub.GenerateStream(text_req(t)))
        return stream_text(chunks), {c.request_id for c in chunks}

    results = await asyncio.gather(*(one(t) for t in texts))
    assert [r[0] for r in results] == texts
    ids = [next(iter(r[1])) for r in results]
    assert all(len(r[1]) == 1 for r in results) and len(set(ids)) == len(texts)


# -- Tokenize, ListModels, GetModelInfo ----------------------------------------------------------------------------


async def test_tokenize_text(stub) -> None:
    r = await stub.Tokenize(pb.TokenizeRequest(text="héllo"))
    assert list(r.token_ids) == list("héllo".encode())
    assert r.count == len(r.token_ids) == 6


async def test_tokenize_messages_matches_generate_prompt(stub) -> None:
    msgs = [pb.ChatMessage(role="user", content="hi")]
    r = await stub.Tokenize(pb.TokenizeRequest(messages=msgs, add_special_tokens=False))
    assert bytes(r.token_ids).decode() == "user: hi\nassistant: "
    g = await stub.Generate(pb.GenerateRequest(messages=msgs))
    assert r.count == g.usage.prompt_tokens


@pytest.mark.parametrize(
    "request_",
    [
        pb.TokenizeRequest(),
        pb.TokenizeRequest(text="a", messages=[pb.ChatMessage(role="user", content="b")]),
        pb.TokenizeRequest(messages=[pb.ChatMessage(role="robot", content="b")]),
    ],
    ids=["none", "both", "bad-role"],
)
async def test_tokenize_invalid(stub, request_) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Tokenize(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert md(err.value.trailing_metadata()).get("error-field")


async def test_tokenize_unknown_model(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Tokenize(pb.TokenizeRequest(model="nope", text="a"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert md(err.value.trailing_metadata())["error-field"] == "model"


async def test_list_models(stub) -> None:
    r = await stub.ListModels(pb.ListModelsRequest())
    assert [m.name for m in r.models] == ["echo"]
    m = r.models[0]
    assert m.default and m.ready
    assert m.executor == "echo" and m.executor_version
    assert m.vocab_size == VOCAB_SIZE
    assert list(m.eos_token_ids) == [EOS]
    assert m.max_context_length == 4096
    assert m.capabilities.lora and m.capabilities.logprobs and m.capabilities.chat_template
    assert m.capabilities.tokenize
    assert m.capabilities.max_top_logprobs == 20
    assert list(m.capabilities.guided) == []
    assert m.limits.max_n == 8 and m.limits.max_stop == 16 and m.limits.default_max_tokens == 256
    assert m.limits.max_tokens == 4096  # capped by the context window (the limit is 8192)


async def test_get_model_info_default_and_named(stub) -> None:
    default = await stub.GetModelInfo(pb.GetModelInfoRequest())
    named = await stub.GetModelInfo(pb.GetModelInfoRequest(model="echo"))
    assert default == named
    assert default.name == "echo" and default.default
    listed = (await stub.ListModels(pb.ListModelsRequest())).models[0]
    assert listed == default


async def test_get_model_info_unknown(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetModelInfo(pb.GetModelInfoRequest(model="gpt-9"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "gpt-9" in err.value.details() and "echo" in err.value.details()  # names what is available
    assert md(err.value.trailing_metadata())["error-field"] == "model"


async def test_served_name_and_limits_from_config() -> None:
    async with running(
        executor={"name": "echo", "served_name": "tiny", "options": {"max_context": 64}},
        limits={"max_n": 2, "max_top_logprobs": 5},
    ) as server:
        assert isinstance(server.executor, EchoExecutor)
        async with open_stub(server) as stub:
            info = await stub.GetModelInfo(pb.GetModelInfoRequest(model="tiny"))
            assert info.max_context_length == 64 and info.limits.max_tokens == 64
            assert info.limits.max_n == 2
            assert info.capabilities.max_top_logprobs == 5
            r = await stub.Generate(pb.GenerateRequest(model="tiny", text="x"))
            assert r.outputs[0].text == "x"


class RecordingEcho(EchoExecutor):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list = []

    async def generate(self, request):  # type: ignore[override]
        self.requests.append(request)
        async for delta in super().generate(request):
            yield delta


async def test_n_fans_out_into_sub_requests_with_distinct_seeds() -> None:
    engine = RecordingEcho()
    async with running(engine) as server, open_stub(server) as stub:
        seeded = pb.GenerateRequest(text="x", n=3, request_id="fan", sampling=pb.SamplingParams(seed=2**64 - 2))
        await stub.Generate(seeded)
        subs = {r.request_id: r.sampling.seed for r in engine.requests}
        assert subs == {"fan/0": 2**64 - 2, "fan/1": 2**64 - 1, "fan/2": 0}  # seed + index, wrapping at 2**64
        engine.requests.clear()
        await stub.Generate(pb.GenerateRequest(text="x", n=2, request_id="unseeded"))
        assert {r.request_id: r.sampling.seed for r in engine.requests} == {"unseeded/0": None, "unseeded/1": None}
        engine.requests.clear()
        await stub.Generate(pb.GenerateRequest(text="x", request_id="single", sampling=pb.SamplingParams(seed=5)))
        (only,) = engine.requests
        assert only.request_id == "single" and only.sampling.seed == 5  # n=1 keeps the id and the seed as given
        assert only.stopping.max_tokens == 256 and only.sampling.temperature == 1.0  # documented defaults
