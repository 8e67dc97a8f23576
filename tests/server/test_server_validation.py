"""Every validation error path: status code, the field named in the message and in trailing metadata "error-field",
and (where there is one) the limit named in the message. Bad input must never hurt the server."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from typing import Any, NamedTuple

import grpc
import pytest
from srv_helpers import SLOW, collect, long_req, md, open_stub, running, text_req

from trt_gateway.executors.echo import EchoExecutor
from trt_gateway.v1 import gateway_pb2 as pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT
Sampling, Stop, Resp, Guided = pb.SamplingParams, pb.StoppingCriteria, pb.ResponseOptions, pb.GuidedDecoding


class Bad(NamedTuple):
    id: str
    request: pb.GenerateRequest
    code: grpc.StatusCode
    field: str
    limit: str | None = None  # a substring the message must hold (the limit or the allowed range)


def T(**kwargs: Any) -> pb.GenerateRequest:
    return pb.GenerateRequest(text="hi", **kwargs)


def user(content: str = "x", role: str = "user") -> pb.ChatMessage:
    return pb.ChatMessage(role=role, content=content)


BAD: list[Bad] = [
    Bad("no-input", pb.GenerateRequest(), INVALID, "text"),
    Bad("text-and-token_ids", pb.GenerateRequest(text="a", token_ids=[1]), INVALID, "text"),
    Bad("text-and-messages", pb.GenerateRequest(text="a", messages=[user()]), INVALID, "text"),
    Bad("all-three", pb.GenerateRequest(text="a", token_ids=[1], messages=[user()]), INVALID, "text"),
    Bad("temperature-negative", T(sampling=Sampling(temperature=-0.1)), INVALID, "sampling.temperature", "[0.0, 100.0]"),
    Bad("temperature-nan", T(sampling=Sampling(temperature=math.nan)), INVALID, "sampling.temperature", "finite"),
    Bad("temperature-inf", T(sampling=Sampling(temperature=math.inf)), INVALID, "sampling.temperature", "finite"),
    Bad("top_p-zero", T(sampling=Sampling(top_p=0.0)), INVALID, "sampling.top_p", "(0.0, 1.0]"),
    Bad("top_p-over-one", T(sampling=Sampling(top_p=1.5)), INVALID, "sampling.top_p", "(0.0, 1.0]"),
    Bad("top_k-negative", T(sampling=Sampling(top_k=-1)), INVALID, "sampling.top_k", ">= 0"),
    Bad("min_p-over-one", T(sampling=Sampling(min_p=1.5)), INVALID, "sampling.min_p", "[0.0, 1.0]"),
    Bad("min_p-negative", T(sampling=Sampling(min_p=-0.5)), INVALID, "sampling.min_p"),
    Bad("repetition_penalty-zero", T(sampling=Sampling(repetition_penalty=0.0)), INVALID, "sampling.repetition_penalty"),
    Bad("repetition_penalty-nan", T(sampling=Sampling(repetition_penalty=math.nan)), INVALID,
        "sampling.repetition_penalty", "finite"),
    Bad("presence_penalty-high", T(sampling=Sampling(presence_penalty=2.5)), INVALID, "sampling.presence_penalty",
        "[-2.0, 2.0]"),
    Bad("frequency_penalty-low", T(sampling=Sampling(frequency_penalty=-3.0)), INVALID, "sampling.frequency_penalty",
        "[-2.0, 2.0]"),
    Bad("logit_bias-token-over-vocab", T(sampling=Sampling(logit_bias={257: 1.0})), INVALID, "sampling.logit_bias",
        "257"),
    Bad("logit_bias-token-negative", T(sampling=Sampling(logit_bias={-1: 1.0})), INVALID, "sampling.logit_bias"),
    Bad("logit_bias-value-high", T(sampling=Sampling(logit_bias={5: 150.0})), INVALID, "sampling.logit_bias[5]",
        "[-100.0, 100.0]"),
    Bad("logit_bias-value-nan", T(sampling=Sampling(logit_bias={5: math.nan})), INVALID, "sampling.logit_bias[5]"),
    Bad("max_tokens-zero", T(stopping=Stop(max_tokens=0)), INVALID, "stopping.max_tokens", "[1, 4096]"),
    Bad("max_tokens-over-context", T(stopping=Stop(max_tokens=5000)), INVALID, "stopping.max_tokens", "[1, 4096]"),
    Bad("min_tokens-over-max", T(stopping=Stop(max_tokens=5, min_tokens=6)), INVALID, "stopping.min_tokens"),
    Bad("min_tokens-over-default", T(stopping=Stop(min_tokens=257)), INVALID, "stopping.min_tokens", "256"),
    Bad("too-many-stops", T(stopping=Stop(stop=[f"s{i}" for i in range(17)])), INVALID, "stopping.stop", "16"),
    Bad("empty-stop", T(stopping=Stop(stop=["ok", ""])), INVALID, "stopping.stop[1]"),
    Bad("stop-too-long", T(stopping=Stop(stop=["x" * 257])), INVALID, "stopping.stop[0]", "256"),
    Bad("stop_token_ids-over-vocab", T(stopping=Stop(stop_token_ids=[257])), INVALID, "stopping.stop_token_ids", "257"),
    Bad("stop_token_ids-negative", T(stopping=Stop(stop_token_ids=[-1])), INVALID, "stopping.stop_token_ids"),
    Bad("too-many-stop_token_ids", T(stopping=Stop(stop_token_ids=list(range(17)))), INVALID,
        "stopping.stop_token_ids", "16"),
    Bad("n-over-max", T(n=9), INVALID, "n", "8"),
    Bad("top_logprobs-over-limit", T(response=Resp(top_logprobs=21)), INVALID, "response.top_logprobs", "20"),
    Bad("guided-two-kinds", T(guided=Guided(json_schema="{}", regex="a+")), INVALID, "guided"),
    Bad("guided-regex-and-choice", T(guided=Guided(regex="a+", choice=["a"])), INVALID, "guided"),
    Bad("guided-json_schema-unsupported", T(guided=Guided(json_schema='{"type": "object"}')),
        grpc.StatusCode.UNIMPLEMENTED, "guided.json_schema", "echo"),
    Bad("guided-regex-unsupported", T(guided=Guided(regex="a+")), grpc.StatusCode.UNIMPLEMENTED, "guided.regex"),
    Bad("guided-grammar-unsupported", T(guided=Guided(grammar="root ::= 'a'")), grpc.StatusCode.UNIMPLEMENTED,
        "guided.grammar"),
    Bad("guided-choice-unsupported", T(guided=Guided(choice=["yes", "no"])), grpc.StatusCode.UNIMPLEMENTED,
        "guided.choice"),
    Bad("bad-role", pb.GenerateRequest(messages=[user(role="wizard")]), INVALID, "messages[0].role", "assistant"),
    Bad("bad-role-second", pb.GenerateRequest(messages=[user(), user(role="")]), INVALID, "messages[1].role"),
    Bad("request_id-pattern", T(request_id="has space"), INVALID, "request_id"),
    Bad("request_id-too-long", T(request_id="x" * 129), INVALID, "request_id", "128"),
    Bad("request_id-unicode", T(request_id="id-é"), INVALID, "request_id"),
    Bad("request_id-trailing-newline", T(request_id="id\n"), INVALID, "request_id"),
    Bad("priority-high", T(priority=1001), INVALID, "priority", "[-1000, 1000]"),
    Bad("priority-low", T(priority=-1001), INVALID, "priority", "[-1000, 1000]"),
    Bad("unknown-model", T(model="nope"), grpc.StatusCode.NOT_FOUND, "model", "echo"),
    Bad("token_id-over-vocab", pb.GenerateRequest(token_ids=[104, 257]), INVALID, "token_ids", "257"),
    Bad("token_id-negative", pb.GenerateRequest(token_ids=[-3]), INVALID, "token_ids"),
    Bad("adapter-bad-name", T(adapter="../etc"), INVALID, "adapter"),
    Bad("adapter-trailing-newline", T(adapter="sql\n"), INVALID, "adapter"),
]


def check(err: grpc.aio.AioRpcError, bad: Bad) -> None:
    assert err.code() == bad.code, (bad.id, err.code(), err.details())
    assert bad.field in err.details(), (bad.id, err.details())
    if bad.limit is not None:
        assert bad.limit in err.details(), (bad.id, err.details())
    assert md(err.trailing_metadata()).get("error-field") == bad.field, (bad.id, err.trailing_metadata())


@pytest.mark.parametrize("bad", BAD, ids=[b.id for b in BAD])
async def test_generate_rejects(stub, bad: Bad) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Generate(bad.request)
    check(err.value, bad)


@pytest.mark.parametrize("bad", BAD, ids=[b.id for b in BAD])
async def test_stream_rejects_with_status_only(stub, bad: Bad) -> None:
    call = stub.GenerateStream(bad.request)
    chunks = []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for chunk in call:
            chunks.append(chunk)
    assert chunks == []  # an error before the first chunk is the status alone
    check(err.value, bad)


async def test_bad_input_never_hurts_the_server(gateway) -> None:
    async with open_stub(gateway) as stub:
        results = await asyncio.gather(
            *(stub.Generate(b.request) for b in BAD), *(collect(stub.GenerateStream(b.request)) for b in BAD),
            return_exceptions=True,
        )
        codes = [r.code() if isinstance(r, grpc.aio.AioRpcError) else r for r in results]
        assert codes == [b.code for b in BAD] * 2
        assert grpc.StatusCode.INTERNAL not in codes
        assert len(gateway.servicer.registry) == 0 and gateway.servicer.admission.inflight == 0
        r = await stub.Generate(text_req("still fine"))
        assert r.outputs[0].text == "still fine"
    requests = gateway.metrics.registry.get_sample_value
    assert requests("trt_gateway_requests_total", {"method": "Generate", "code": "INVALID_ARGUMENT"}) >= 40
    assert requests("trt_gateway_requests_total", {"method": "Generate", "code": "OK"}) == 1
    assert requests("trt_gateway_requests_total", {"method": "Generate", "code": "INTERNAL"}) is None


@pytest.mark.parametrize(
    "request_",
    [
        T(sampling=Sampling(temperature=0.0, top_p=1.0, top_k=0, min_p=1.0, repetition_penalty=10.0,
                            presence_penalty=-2.0, frequency_penalty=2.0, seed=2**64 - 1, logit_bias={0: -100, 256: 100})),
        T(stopping=Stop(max_tokens=4096)),
        T(stopping=Stop(max_tokens=5, min_tokens=5)),
        T(stopping=Stop(stop=[f"s{i}" for i in range(16)], stop_token_ids=list(range(16)))),
        T(stopping=Stop(stop=["x" * 256])),
        T(n=8),
        T(response=Resp(top_logprobs=20)),
        T(priority=1000),
        T(priority=-1000),
        T(request_id="x" * 128),
        pb.GenerateRequest(token_ids=[0, 255, 256]),
        pb.GenerateRequest(messages=[user(role=r) for r in ("system", "user", "assistant", "tool")]),
    ],
    ids=["sampling-edges", "max_tokens-at-limit", "min-eq-max", "16-stops", "stop-at-length", "n-max",
         "top_logprobs-max", "priority-max", "priority-min", "request_id-max", "token-ids-edges", "all-roles"],
)
async def test_boundary_values_are_accepted(stub, request_) -> None:
    r = await stub.Generate(request_)
    assert r.outputs and all(o.finish_reason != pb.FINISH_REASON_UNSPECIFIED for o in r.outputs)


# -- limits from config and the executor's context window ----------------------------------------------------------


async def test_configured_limits_are_enforced() -> None:
    limits = {"max_prompt_chars": 10, "max_prompt_tokens": 4, "max_messages": 2, "max_logit_bias": 2,
              "max_request_id_length": 8}
    cases = [
        (pb.GenerateRequest(text="x" * 11), "text", "10"),
        (pb.GenerateRequest(token_ids=[1] * 5), "token_ids", "4"),
        (pb.GenerateRequest(messages=[user()] * 3), "messages", "2"),
        (pb.GenerateRequest(messages=[user("x" * 6), user("y" * 6)]), "messages", "10"),
        (T(sampling=Sampling(logit_bias={1: 1, 2: 1, 3: 1})), "sampling.logit_bias", "2"),
        (T(request_id="123456789"), "request_id", "8"),
    ]
    async with running(limits=limits) as server, open_stub(server) as stub:
        for request, field, limit in cases:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Generate(request)
            assert err.value.code() == INVALID, (field, err.value.details())
            assert md(err.value.trailing_metadata())["error-field"] == field
            assert field in err.value.details() and limit in err.value.details()
        r = await stub.Generate(pb.GenerateRequest(text="x" * 10))
        assert r.outputs[0].text == "x" * 10


async def test_prompt_over_context_window() -> None:
    async with running(executor={"name": "echo", "options": {"max_context": 16}}) as server, open_stub(server) as stub:
        for call in (stub.Generate, lambda r: collect(stub.GenerateStream(r))):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(pb.GenerateRequest(text="x" * 20))
            assert err.value.code() == INVALID
            assert "16" in err.value.details() and "20" in err.value.details()
            assert md(err.value.trailing_metadata())["error-field"] == "text"
        # max_tokens above the window is refused by validation, naming the window as the limit.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Generate(T(stopping=Stop(max_tokens=17)))
        assert err.value.code() == INVALID and "[1, 16]" in err.value.details()
        # A prompt that fits generates up to the end of the window: LENGTH.
        r = await stub.Generate(pb.GenerateRequest(text="x" * 10, stopping=Stop(max_tokens=16, ignore_eos=True)))
        assert r.outputs[0].finish_reason == pb.FINISH_REASON_LENGTH
        assert r.outputs[0].usage.completion_tokens == 6


async def test_duplicate_running_request_id_is_refused() -> None:
    async with running(EchoExecutor(SLOW)) as server, open_stub(server) as stub:
        first = stub.GenerateStream(long_req(100, request_id="dup"))
        await first.__aiter__().__anext__()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Generate(text_req("x", request_id="dup"))
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert md(err.value.trailing_metadata())["error-field"] == "request_id"
        first.cancel()


async def test_unsupported_capabilities_are_unimplemented() -> None:
    """An executor without logprobs / chat template / penalties refuses them with UNIMPLEMENTED, naming the field."""
    class Plain(EchoExecutor):
        def models(self):  # type: ignore[override]
            (m,) = super().models()
            caps = dataclasses.replace(
                m.capabilities, logprobs=False, chat_template=False, penalties=False, logit_bias=False, seed=False,
                min_p=False, prompt_token_ids=False, lora=False, tokenize=False,
            )
            return (dataclasses.replace(m, capabilities=caps),)

    cases = [
        (T(response=Resp(logprobs=True)), "response.logprobs"),
        (T(response=Resp(top_logprobs=1)), "response.logprobs"),
        (pb.GenerateRequest(messages=[user()]), "messages"),
        (T(sampling=Sampling(presence_penalty=0.5)), "sampling"),
        (T(sampling=Sampling(repetition_penalty=1.2)), "sampling"),
        (T(sampling=Sampling(logit_bias={1: 1.0})), "sampling.logit_bias"),
        (T(sampling=Sampling(seed=1)), "sampling.seed"),
        (T(sampling=Sampling(min_p=0.1)), "sampling.min_p"),
        (T(response=Resp(prompt_token_ids=True)), "response.prompt_token_ids"),
        (T(adapter="a1"), "adapter"),
    ]
    async with running(Plain()) as server, open_stub(server) as stub:
        for request, field in cases:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Generate(request)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED, (field, err.value.details())
            assert md(err.value.trailing_metadata())["error-field"] == field
            assert field in err.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Tokenize(pb.TokenizeRequest(text="x"))
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListAdapters(pb.ListAdaptersRequest())
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # repetition_penalty 1 (explicitly "off") is not a penalty.
        r = await stub.Generate(T(sampling=Sampling(repetition_penalty=1.0)))
        assert r.outputs[0].text == "hi"
