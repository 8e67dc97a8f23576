"""W3C trace context: `traceparent` accepted on gRPC and HTTP, carried into the log records, and a server span in
the caller's trace when OpenTelemetry is installed (its SDK with an in-memory exporter here)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from trt_gateway import tracing
from trt_gateway.executors.echo import EchoExecutor
from trt_gateway.testing import LiveGateway
from trt_gateway.types import GenerateRequest, TokenDelta
from trt_gateway.v1 import gateway_pb2 as pb
from trt_gateway.v1 import gateway_pb2_grpc as pb_grpc

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT}-01"


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # once per process; other tests' spans just land here too
    return exporter


class Recording(EchoExecutor):
    """Echo that remembers the trace id visible while it serves each request (what its log lines would carry)."""

    seen: list[str] = []

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenDelta]:
        self.seen.append(tracing.trace_id_var.get())
        async for delta in super().generate(request):
            yield delta


@pytest.fixture(scope="module")
def gateway(spans: InMemorySpanExporter) -> Iterator[LiveGateway]:
    with (live := LiveGateway(Recording({"script": "ok"}), server={"http": True, "http_port": 0})):
        yield live


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (TRACEPARENT, True),
        (f"01-{TRACE_ID}-{PARENT}-01-future", True),  # a later version may add fields
        (f"00-{TRACE_ID}-{PARENT}-01-extra", False),
        (f"ff-{TRACE_ID}-{PARENT}-01", False),
        (f"00-{'0' * 32}-{PARENT}-01", False),
        (f"00-{TRACE_ID.upper()}-{PARENT}-01", False),
        ("garbage", False),
        (None, False),
    ],
)
def test_parse(value: str | None, ok: bool) -> None:
    parsed = tracing.parse(value)
    assert (parsed is not None) is ok
    if parsed is not None:
        assert parsed.trace_id == TRACE_ID and parsed.parent_id == PARENT


def test_grpc_request_joins_the_callers_trace(gateway: LiveGateway, spans: InMemorySpanExporter) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{gateway.server.port}") as channel:
        stub = pb_grpc.GatewayStub(channel)
        stub.Generate(pb.GenerateRequest(text="x"), metadata=(("traceparent", TRACEPARENT),))
    assert Recording.seen[-1] == TRACE_ID
    span = next(s for s in spans.get_finished_spans() if s.name.endswith("/Generate"))
    assert f"{span.context.trace_id:032x}" == TRACE_ID and f"{span.parent.span_id:016x}" == PARENT
    assert span.kind is trace.SpanKind.SERVER and span.attributes["rpc.grpc.status_code_name"] == "OK"


def test_http_request_joins_the_callers_trace(gateway: LiveGateway, spans: InMemorySpanExporter) -> None:
    url = f"http://127.0.0.1:{gateway.server.http_port}/v1/completions"
    for stream in (False, True):
        r = httpx.post(url, json={"model": "echo", "prompt": "x", "stream": stream},
                       headers={"traceparent": TRACEPARENT})
        assert r.status_code == 200
        assert Recording.seen[-1] == TRACE_ID
    http_spans = [s for s in spans.get_finished_spans() if s.name == "POST /v1/completions"]
    assert len(http_spans) == 2 and all(f"{s.context.trace_id:032x}" == TRACE_ID for s in http_spans)


def test_without_traceparent_a_new_trace_starts(gateway: LiveGateway) -> None:
    httpx.post(f"http://127.0.0.1:{gateway.server.http_port}/v1/completions", json={"prompt": "x"})
    assert Recording.seen[-1] not in ("-", TRACE_ID)  # the SDK made a root span with a fresh id
