"""Hypothesis drives the real server with random and malformed requests.

Every answer must be OK or one of the documented client-error statuses (never INTERNAL or UNKNOWN), and afterwards the
server must still be healthy and serve a normal request.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from gateway_testing import running, target
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from trt_gateway.config import from_mapping
from trt_gateway.executors.echo import EchoExecutor
from trt_gateway.types import GenerateRequest, TokenDelta
from trt_gateway.v1 import gateway_pb2 as pb
from trt_gateway.v1 import gateway_pb2_grpc as pb_grpc

ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
}
INT32 = st.integers(-(2**31), 2**31 - 1)
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32) | st.sampled_from([0.0, 1.0, -1.0, 1e-9, 2.0])
SHORT_TEXT = st.text(max_size=40)


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway in a background event loop, so hypothesis can drive it with a plain blocking stub."""
    loop = asyncio.new_event_loop()
    ready: dict[str, str] = {}
    started, stop = threading.Event(), asyncio.Event()

    async def serve() -> None:
        executor = {"options": {"max_context": 512}, "lora": {"adapter_roots": [str(tmp_path_factory.mktemp("roots"))]}}
        async with running(executor=executor, limits={"max_tokens": 256}) as server:
            ready["target"] = target(server)
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(30)
    yield ready["target"]
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)


@pytest.fixture(scope="module")
def native_channel() -> Iterator[grpc.Channel]:
    from trt_gateway.executors.native import NativeExecutor
    from trt_gateway.testing import LiveGateway

    with LiveGateway(NativeExecutor.from_config(from_mapping({"executor": {"name": "native"}}).executor)) as address:
        with grpc.insecure_channel(address) as ch:
            yield ch


@pytest.fixture(scope="module")
def channel(address: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(address) as ch:
        yield ch


sampling = st.builds(
    pb.SamplingParams,
    temperature=FLOATS, top_p=FLOATS, top_k=INT32, min_p=FLOATS, repetition_penalty=FLOATS,
    presence_penalty=FLOATS, frequency_penalty=FLOATS, seed=st.integers(0, 2**64 - 1),
    logit_bias=st.dictionaries(INT32, FLOATS, max_size=4),
)
stopping = st.builds(
    pb.StoppingCriteria,
    max_tokens=st.integers(0, 2**32 - 1) | st.integers(1, 16), min_tokens=st.integers(0, 2**32 - 1) | st.just(0),
    stop=st.lists(SHORT_TEXT, max_size=20), stop_token_ids=st.lists(INT32, max_size=20),
    include_stop=st.booleans(), ignore_eos=st.booleans(),
)
hostile = st.builds(
    pb.GenerateRequest,
    request_id=st.text(max_size=150) | st.just(""),
    model=st.sampled_from(["", "echo", "nope"]) | SHORT_TEXT,
    text=st.text(max_size=200) | st.just(""),
    token_ids=st.lists(st.integers(-5, 300) | INT32, max_size=20),
    messages=st.lists(st.builds(pb.ChatMessage, role=st.sampled_from(["user", "system", "x"]), content=SHORT_TEXT),
                      max_size=3),
    sampling=sampling,
    stopping=stopping,
    response=st.builds(pb.ResponseOptions, logprobs=st.booleans(), top_logprobs=st.integers(0, 2**32 - 1) | st.just(2),
                       prompt_token_ids=st.booleans(), echo=st.booleans(), queue_position=st.booleans()),
    guided=st.builds(pb.GuidedDecoding, json_schema=SHORT_TEXT, regex=SHORT_TEXT, choice=st.lists(SHORT_TEXT, max_size=3)),
    adapter=SHORT_TEXT,
    n=st.integers(0, 2**32 - 1) | st.integers(0, 3),
    priority=INT32,
)
# Mostly-valid requests with random combinations, so the fuzzing also walks the paths that generate tokens.
plausible = st.builds(
    pb.GenerateRequest,
    model=st.sampled_from(["", "echo"]),
    text=st.text(min_size=1, max_size=100),
    sampling=st.builds(
        pb.SamplingParams, temperature=st.floats(0, 2), top_p=st.floats(0.01, 1), top_k=st.integers(0, 50),
        min_p=st.floats(0, 1), presence_penalty=st.floats(-2, 2), seed=st.integers(0, 2**64 - 1),
        logit_bias=st.dictionaries(st.integers(0, 256), st.floats(-100, 100), max_size=3),
    ),
    stopping=st.builds(
        pb.StoppingCriteria, max_tokens=st.integers(1, 64), stop=st.lists(st.text(min_size=1, max_size=4), max_size=3),
        stop_token_ids=st.lists(st.integers(0, 256), max_size=3), include_stop=st.booleans(), ignore_eos=st.booleans(),
    ),
    response=st.builds(pb.ResponseOptions, logprobs=st.booleans(), top_logprobs=st.integers(0, 5),
                       prompt_token_ids=st.booleans(), echo=st.booleans()),
    n=st.integers(0, 3),
    priority=st.integers(-10, 10),
)
# Issue #20: inputs that used to give INTERNAL or a metadata-size error instead of the real status.
HUGE = 1_000_000
GUIDED_ATTACKS = [
    pb.GuidedDecoding(regex=r"[^\x00-\U0010FFFF]"), pb.GuidedDecoding(regex="[^\x00-\U0010FFFF]"),
    pb.GuidedDecoding(grammar='root ::= root "a"'), pb.GuidedDecoding(choice=["\x00"]),
    pb.GuidedDecoding(choice=["a|b", "(", "\\", '"', "\n"]), pb.GuidedDecoding(json_schema="{" + "x" * HUGE),
    pb.GuidedDecoding(regex="a" * HUGE), pb.GuidedDecoding(grammar="root ::= " + '"a" ' * 200_000),
    pb.GuidedDecoding(choice=["c"] * 6000), pb.GuidedDecoding(choice=["y" * 100_000]),
]
bounds = st.builds(
    pb.GenerateRequest,
    model=st.sampled_from(["", "m" * HUGE, "x" * 300, "\x00"]),
    text=st.sampled_from(["hi", "t" * 900_000]),
    guided=st.sampled_from(GUIDED_ATTACKS) | st.builds(pb.GuidedDecoding, regex=st.text(max_size=30),
                                                       choice=st.lists(st.text(max_size=5), max_size=4)),
    adapter=st.sampled_from(["", "a" * HUGE, "\x00"]),
    stopping=st.builds(pb.StoppingCriteria, max_tokens=st.integers(1, 8)),
)
requests = st.one_of(plausible, hostile, bounds)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(request=requests, stream=st.booleans())
def test_random_requests_get_ok_or_a_documented_status(channel: grpc.Channel, request: pb.GenerateRequest,
                                                       stream: bool) -> None:
    stub = pb_grpc.GatewayStub(channel)
    try:
        if stream:
            chunks = list(stub.GenerateStream(request, timeout=10))
            finals = [c for c in chunks if c.finish_reason]
            assert len(finals) == max(request.n, 1)
        else:
            response = stub.Generate(request, timeout=10)
            assert len(response.outputs) == max(request.n, 1)
            assert all(math.isfinite(o.usage.completion_tokens) for o in response.outputs)
        event("OK")
    except grpc.RpcError as exc:
        event(exc.code().name)
        assert exc.code() in ALLOWED, f"{exc.code()}: {exc.details()}"
        assert exc.details(), "every refusal explains itself"
        # A status echoing a huge value breaks gRPC's header limit: the client then sees this instead of the status.
        assert "metadata size" not in exc.details() and len(exc.details()) < 4096, "user values are quoted short"


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(payload=st.binary(max_size=300), method=st.sampled_from(["Generate", "Tokenize", "LoadAdapter", "Abort"]))
def test_malformed_bytes_get_invalid_argument_or_ok(channel: grpc.Channel, payload: bytes, method: str) -> None:
    call = channel.unary_unary(f"/trt_gateway.v1.Gateway/{method}")  # raw bytes in, raw bytes out
    try:
        call(payload, timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() in ALLOWED, f"{exc.code()}: {exc.details()}"


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.text(max_size=40) | st.sampled_from(["a\x00b", "\x00", "p" * HUGE, "../x", "/etc"]),
       name=st.sampled_from(["ok", "n" * HUGE, "\x00"]) | SHORT_TEXT)
def test_adapter_paths_and_names_get_a_documented_status(channel: grpc.Channel, path: str, name: str) -> None:
    try:
        pb_grpc.GatewayStub(channel).LoadAdapter(pb.LoadAdapterRequest(name=name, path=path), timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() in ALLOWED, f"{exc.code()}: {exc.details()}"
        assert len(exc.details() or "") < 4096


@pytest.mark.parametrize("guided", GUIDED_ATTACKS, ids=lambda g: str(g)[:40])
def test_guided_attacks_on_the_native_engine_get_a_documented_status(native_channel: grpc.Channel,
                                                                       guided: pb.GuidedDecoding) -> None:
    """The echo executor cannot compile constraints: these reach xgrammar only on the native engine."""
    stub = pb_grpc.GatewayStub(native_channel)
    request = pb.GenerateRequest(text="hi", guided=guided, stopping=pb.StoppingCriteria(max_tokens=4))
    try:
        stub.Generate(request, timeout=60)
    except grpc.RpcError as exc:
        assert exc.code() in ALLOWED, f"{exc.code()}: {exc.details()}"
        assert len(exc.details() or "") < 4096
    assert stub.Generate(pb.GenerateRequest(text="after", stopping=pb.StoppingCriteria(max_tokens=2)), timeout=60)


def test_server_is_healthy_after_the_fuzzing(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    response = pb_grpc.GatewayStub(channel).Generate(pb.GenerateRequest(text="still here"), timeout=10)
    assert response.outputs[0].text == "still here"


# -- tenants and adapter paths (issue #20.1, #20.2, #20.12) --------------------------------------------------------------

TENANT_KEYS = {
    "api_keys": ["root"],
    "scoped_api_keys": [{"key": "victim", "adapters": ["", "mine"]}, {"key": "tenant", "adapters": ["", "mine"]},
                        {"key": "ops", "adapters": ["*"], "admin": True}],
    "stall_timeout_s": 0,  # the victim's stream below is never read to the end
}
VICTIM_ID = "victim-job"


class HoldingEcho(EchoExecutor):
    """Echo that holds a request whose prompt is "hold" until it is aborted (the victim's long request)."""

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenDelta]:
        if request.prompt.text == "hold":
            yield TokenDelta(text="h", token_ids=(104,))
            await asyncio.Event().wait()  # until closed by an abort
        async for delta in super().generate(request):
            yield delta


@pytest.fixture(scope="module")
def tenant_server(tmp_path_factory) -> Iterator[tuple[str, Iterator[pb.GenerateStreamResponse]]]:
    """A keyed gateway with an adapter root holding a good adapter and hostile ones, and one long stream of the
    "victim" key running for the whole module."""
    base = tmp_path_factory.mktemp("tenants")
    root, outside = base / "root", base / "outside"
    for d in (root / "good", outside / "secret"):
        d.mkdir(parents=True)
        (d / "adapter_config.json").write_text('{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}')
    (root / "linked-config").mkdir()
    (root / "linked-config" / "adapter_config.json").symlink_to(outside / "secret" / "adapter_config.json")
    (root / "escape").symlink_to(outside / "secret", target_is_directory=True)
    loop = asyncio.new_event_loop()
    ready: dict[str, str] = {}
    started, stop = threading.Event(), asyncio.Event()

    async def serve() -> None:
        lora = {"adapter_roots": [str(root)], "adapters": {"mine": "good"}}
        async with running(HoldingEcho(), server=TENANT_KEYS, executor={"lora": lora}) as server:
            ready["target"] = target(server)
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(30)
    with grpc.insecure_channel(ready["target"]) as ch:
        victim = pb_grpc.GatewayStub(ch).GenerateStream(
            pb.GenerateRequest(text="hold", request_id=VICTIM_ID),
            metadata=(("authorization", "Bearer victim"),),
        )
        next(victim)
        yield ready["target"], victim
        victim.cancel()
    loop.call_soon_threadsafe(stop.set)
    thread.join(30)


TENANT_ALLOWED = ALLOWED | {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}
PATHS = st.sampled_from(["good", "linked-config", "escape", "../root/good", "good\x00", "/etc", "nope", "", "a/b"])


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(key=st.sampled_from(["tenant", "ops", "root", "victim", "wrong"]),
       rpc=st.sampled_from(["Abort", "Generate", "LoadAdapter", "UnloadAdapter", "ListAdapters", "Tokenize",
                            "GetModelInfo", "ListModels"]),
       request_id=st.sampled_from([VICTIM_ID, "x"]) | st.text(max_size=20),
       name=st.sampled_from(["mine", "new", "good"]) | SHORT_TEXT, path=PATHS | SHORT_TEXT,
       model=st.sampled_from(["", "echo", "nope"]))
def test_tenants_cannot_reach_each_other_and_paths_stay_confined(
    tenant_server, key: str, rpc: str, request_id: str, name: str, path: str, model: str
) -> None:
    address, _ = tenant_server
    metadata = (("authorization", f"Bearer {key}"),)
    with grpc.insecure_channel(address) as ch:
        stub = pb_grpc.GatewayStub(ch)
        calls = {
            "Abort": lambda: stub.Abort(pb.AbortRequest(request_id=request_id), metadata=metadata, timeout=10),
            "Generate": lambda: stub.Generate(pb.GenerateRequest(text="hi", request_id=request_id, model=model),
                                              metadata=metadata, timeout=10),
            "LoadAdapter": lambda: stub.LoadAdapter(pb.LoadAdapterRequest(name=name, path=path, model=model),
                                                    metadata=metadata, timeout=10),
            "UnloadAdapter": lambda: stub.UnloadAdapter(pb.UnloadAdapterRequest(name=name, model=model),
                                                        metadata=metadata, timeout=10),
            "ListAdapters": lambda: stub.ListAdapters(pb.ListAdaptersRequest(model=model), metadata=metadata, timeout=10),
            "Tokenize": lambda: stub.Tokenize(pb.TokenizeRequest(text="hi", model=model), metadata=metadata, timeout=10),
            "GetModelInfo": lambda: stub.GetModelInfo(pb.GetModelInfoRequest(model=model), metadata=metadata, timeout=10),
            "ListModels": lambda: stub.ListModels(pb.ListModelsRequest(), metadata=metadata, timeout=10),
        }
        try:
            answer = calls[rpc]()
            event(f"{rpc} OK")
        except grpc.RpcError as exc:
            event(f"{rpc} {exc.code().name}")
            assert exc.code() in TENANT_ALLOWED, f"{exc.code()}: {exc.details()}"
            assert exc.details()
            return
        if rpc == "Abort" and request_id == VICTIM_ID:
            assert not answer.found or key == "victim"  # only the owner finds it
        if rpc == "LoadAdapter":
            assert key in ("ops", "root")  # admin keys only
            assert Path(answer.path).parts[-2:] == ("root", "good")  # the one loadable directory under the root
            stub.UnloadAdapter(pb.UnloadAdapterRequest(name=name, model=model), metadata=metadata, timeout=10)
        if rpc == "ListAdapters" and key in ("tenant", "victim"):
            assert all(a.path == "" for a in answer.adapters)  # no server paths to non-admin keys


def test_the_victims_stream_outlived_the_tenant_fuzzing(tenant_server) -> None:
    address, victim = tenant_server
    with grpc.insecure_channel(address) as ch:
        found = pb_grpc.GatewayStub(ch).Abort(pb.AbortRequest(request_id=VICTIM_ID),
                                              metadata=(("authorization", "Bearer victim"),), timeout=10)
    assert found.found  # still running: no other key aborted it
