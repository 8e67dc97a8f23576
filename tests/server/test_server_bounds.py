"""Issue #20, items 4 and 5: huge or malformed user values get a short INVALID_ARGUMENT (or NOT_FOUND) naming the field
and the `limits.` setting, through both doors (gRPC and the OpenAI HTTP API), and are never echoed or logged whole.

Before these bounds, a 1 MB `model` was echoed into the status message, whose trailing metadata then broke gRPC's
16 KiB header limit: the client saw RESOURCE_EXHAUSTED "metadata size exceeds hard limit" instead of the real status.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from gateway_testing import running, target

from trt_gateway import errors
from trt_gateway.server.app import GatewayServer
from trt_gateway.v1 import gateway_pb2 as pb
from trt_gateway.v1 import gateway_pb2_grpc as pb_grpc

HUGE = 1_000_000
SHORT_DETAILS = 600  # every refusal below explains itself in fewer characters than this


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[GatewayServer]:
    async with running(
        server={"http": True, "http_port": 0},
        executor={"options": {"max_context": 1024}, "lora": {"adapter_roots": [str(tmp_path)]}},
        limits={"max_guided_choices": 50},
    ) as s:
        yield s


@pytest.fixture
async def stub(server: GatewayServer) -> AsyncIterator[pb_grpc.GatewayStub]:
    async with grpc.aio.insecure_channel(target(server)) as channel:
        yield pb_grpc.GatewayStub(channel)


@pytest.fixture
async def http(server: GatewayServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}", timeout=30) as client:
        yield client


async def refused(call, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT) -> tuple[str, str]:  # noqa: ANN001
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == code, err.value.details()
    details = err.value.details() or ""
    assert len(details) < SHORT_DETAILS
    field = dict(err.value.trailing_metadata() or ()).get(errors.FIELD_KEY, "")
    return field, details


async def http_refused(http: httpx.AsyncClient, body: dict, status: int = 400) -> dict:
    r = await http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], **body})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert len(error["message"]) < SHORT_DETAILS
    return error


def gen(**fields) -> pb.GenerateRequest:  # noqa: ANN003
    return pb.GenerateRequest(**{"text": "hi", **fields})


# -- item 5: lengths, named limits, short messages ---------------------------------------------------------------


async def test_a_huge_model_name_is_refused_by_its_length_on_every_rpc(stub, http) -> None:
    name = "m" * HUGE
    for call in (stub.Generate(gen(model=name)), stub.Tokenize(pb.TokenizeRequest(model=name, text="x")),
                 stub.GetModelInfo(pb.GetModelInfoRequest(model=name))):
        field, details = await refused(call)
        assert field == "model" and "limits.max_model_name_length" in details and "256" in details
    error = await http_refused(http, {"model": name})
    assert error["param"] == "model" and "limits.max_model_name_length" in error["message"]


async def test_an_unknown_model_is_quoted_short(stub, http) -> None:
    name = "x" * 200  # under the length limit: looked up, not found, and quoted cut
    field, details = await refused(stub.Generate(gen(model=name)), grpc.StatusCode.NOT_FOUND)
    assert field == "model" and "(200 characters)" in details and name not in details
    error = await http_refused(http, {"model": name}, 404)
    assert "(200 characters)" in error["message"]


@pytest.mark.parametrize(
    "guided, http_body, field, setting",
    [
        (pb.GuidedDecoding(json_schema="{" + "x" * HUGE), {"guided_json": "{" + "x" * HUGE},
         "guided.json_schema", "limits.max_guided_chars"),
        (pb.GuidedDecoding(regex="a" * 70_000), {"guided_regex": "a" * 70_000}, "guided.regex", "limits.max_guided_chars"),
        (pb.GuidedDecoding(grammar="root ::= " + '"a" ' * 20_000), {"guided_grammar": "root ::= " + '"a" ' * 20_000},
         "guided.grammar", "limits.max_guided_chars"),
        (pb.GuidedDecoding(choice=[str(i) for i in range(51)]), {"guided_choice": [str(i) for i in range(51)]},
         "guided.choice", "limits.max_guided_choices"),
        (pb.GuidedDecoding(choice=["y" * 40_000, "z" * 40_000]), {"guided_choice": ["y" * 40_000, "z" * 40_000]},
         "guided.choice", "limits.max_guided_chars"),
    ],
)
async def test_guided_constraints_are_bounded_before_anything_compiles(stub, http, guided, http_body, field,
                                                                       setting) -> None:
    got, details = await refused(stub.Generate(gen(guided=guided)))
    assert got == field and setting in details
    error = await http_refused(http, http_body)
    assert setting in error["message"] and error["param"] in ("guided_json", "guided_regex", "guided_grammar",
                                                               "guided_choice", "response_format")


async def test_text_that_cannot_fit_the_window_is_refused_by_its_length(stub, http) -> None:
    text = "y" * (1024 * 128 + 1)  # echo's window is 1024 tokens; the default bound is 128 characters a token
    field, details = await refused(stub.Generate(gen(text=text)))
    assert field == "text" and "limits.max_chars_per_token" in details and "131072" in details
    error = await http_refused(http, {"messages": [{"role": "user", "content": text}]})
    assert error["param"] == "messages" and "limits.max_chars_per_token" in error["message"]


async def test_refusals_are_logged_short(stub, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trt_gateway")
    await refused(stub.Generate(gen(model="m" * HUGE)))
    await refused(stub.Generate(gen(guided=pb.GuidedDecoding(json_schema="{" + "x" * HUGE))))
    assert caplog.records and max(len(r.getMessage()) for r in caplog.records) < 1000


def test_quote_and_the_message_cap() -> None:
    assert errors.quote("abc") == "'abc'"
    assert errors.quote("a" * 100) == repr("a" * 80) + "... (100 characters)"
    assert len(errors.InvalidArgument("x" * HUGE).message) < errors.MAX_MESSAGE_CHARS + 40


# -- item 4: a NUL byte in an adapter path -----------------------------------------------------------------------


async def test_an_adapter_path_with_a_nul_byte_is_invalid_argument(stub) -> None:
    field, details = await refused(stub.LoadAdapter(pb.LoadAdapterRequest(name="nul", path="a\x00b")))
    assert field == "path" and "NUL" in details
    await stub.Generate(gen())  # and the server keeps serving


@pytest.mark.parametrize("path, says", [("p" * HUGE, "at most 4096 characters"), ("p" * 300, "File name too long")])
async def test_an_adapter_path_the_os_cannot_take_is_invalid_argument(stub, path: str, says: str) -> None:
    """Found by the fuzz suite: the filesystem's OSError (a component over NAME_MAX) was a bug at the boundary."""
    field, details = await refused(stub.LoadAdapter(pb.LoadAdapterRequest(name="long", path=path)))
    assert field == "path" and says in details
