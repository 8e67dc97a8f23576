"""Guided decoding through the gateway: the native executor on the demo model, over real gRPC."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import pytest
from gateway_testing import running, target

from trt_gateway.executors.native import NativeExecutor
from trt_gateway.v1 import gateway_pb2 as pb
from trt_gateway.v1 import gateway_pb2_grpc as pb_grpc

SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "maxLength": 12},
        "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
    },
    "required": ["answer", "confidence"],
}


@pytest.fixture
async def stub() -> AsyncIterator[pb_grpc.GatewayStub]:
    async with running(NativeExecutor.from_config(_native())) as server:
        async with grpc.aio.insecure_channel(target(server)) as channel:
            yield pb_grpc.GatewayStub(channel)


def _native():
    from trt_gateway.config import from_mapping

    return from_mapping({"executor": {"name": "native"}}).executor


def request(guided: pb.GuidedDecoding, **stopping) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        text="Question: is the sky blue? Reply in JSON.",
        sampling=pb.SamplingParams(temperature=0.7, seed=3),
        stopping=pb.StoppingCriteria(max_tokens=200, **stopping),
        guided=guided,
    )


async def test_model_info_lists_the_guided_kinds(stub) -> None:
    info = await stub.GetModelInfo(pb.GetModelInfoRequest())
    assert list(info.capabilities.guided) == ["json_schema", "regex", "grammar", "choice"]


async def test_json_schema_stream_is_valid_json(stub) -> None:
    text = ""
    async for chunk in stub.GenerateStream(request(pb.GuidedDecoding(json_schema=json.dumps(SCHEMA)))):
        text += chunk.text
        last = chunk
    value = json.loads(text)
    assert set(value) == {"answer", "confidence"} and 0 <= value["confidence"] <= 100
    assert last.finish_reason == pb.FINISH_REASON_STOP_TOKEN


async def test_choice_with_n_outputs(stub) -> None:
    msg = request(pb.GuidedDecoding(choice=["yes", "no"]))
    msg.n = 4
    out = await stub.Generate(msg)
    assert len(out.outputs) == 4 and all(o.text in ("yes", "no") for o in out.outputs)


async def test_a_stop_string_inside_guided_output(stub) -> None:
    out = await stub.Generate(request(pb.GuidedDecoding(regex=r"[a-z]{3}-[0-9]{3}"), stop=["-"]))
    text = out.outputs[0].text
    assert len(text) == 3 and text.isalpha() and out.outputs[0].finish_reason == pb.FINISH_REASON_STOP_STRING


@pytest.mark.parametrize(
    "guided, field, reason",
    [
        (pb.GuidedDecoding(json_schema='{"type": "objekt"}'), "guided.json_schema", "Unsupported type"),
        (pb.GuidedDecoding(regex="([a-z]"), "guided.regex", "parenthesis"),
        (pb.GuidedDecoding(grammar="root ::= "), "guided.grammar", "EBNF"),
        (pb.GuidedDecoding(regex="a", choice=["b"]), "guided", "at most one"),
    ],
)
async def test_bad_constraints_get_invalid_argument_and_the_server_keeps_serving(stub, guided, field, reason) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Generate(request(guided))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in err.value.details() and reason.lower() in err.value.details().lower()
    ok = await stub.Generate(request(pb.GuidedDecoding(choice=["fine"])))
    assert ok.outputs[0].text == "fine"
