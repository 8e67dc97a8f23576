"""W3C trace context: a caller's `traceparent` (HTTP header or gRPC metadata) ties the gateway's log lines to the
caller's trace, and, when the `opentelemetry` package is installed and configured, each request becomes a server span
in that trace. There is no hard dependency: without opentelemetry only the ids travel, into the logs.

Spans are started and ended explicitly, never made "current": a streamed response is written from other tasks than
the one that started it, and a context attached in one and detached in another is an error in OpenTelemetry.
"""

from __future__ import annotations

import contextvars
import re
from dataclasses import dataclass
from typing import Any

TRACEPARENT_KEY = "traceparent"
_TRACEPARENT_RE = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")

trace_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("trt_gateway_trace_id", default="-")


@dataclass(frozen=True, slots=True)
class TraceParent:
    trace_id: str  # 32 hex digits
    parent_id: str  # 16 hex digits: the caller's span
    flags: str


def parse(value: str | None) -> TraceParent | None:
    """A valid `traceparent`, or None (an invalid one is ignored, as the W3C spec asks: a new trace starts)."""
    if not value or len(value) > 512:
        return None
    m = _TRACEPARENT_RE.fullmatch(value.strip())
    if m is None or m.group(1) == "ff" or (m.group(1) == "00" and m.group(5)):
        return None
    trace_id, parent_id = m.group(2), m.group(3)
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return TraceParent(trace_id, parent_id, m.group(4))


class Trace:
    """One request's place in its caller's trace: the id for the logs, and the span if OpenTelemetry is on."""

    def __init__(self, name: str, traceparent: str | None, attributes: dict[str, Any]) -> None:
        parent = parse(traceparent)
        self._span: Any = None
        tracer = _tracer()
        if tracer is not None:
            from opentelemetry import propagate, trace

            context = propagate.extract({TRACEPARENT_KEY: traceparent}) if parent is not None else None
            self._span = tracer.start_span(name, context=context, kind=trace.SpanKind.SERVER, attributes=attributes)
            ids = self._span.get_span_context()
            trace_id_var.set(f"{ids.trace_id:032x}" if ids.is_valid else "-")
        else:
            trace_id_var.set(parent.trace_id if parent is not None else "-")

    def end(self, code: str) -> None:
        """code: the outcome's gRPC status name ("OK" or the error's)."""
        if self._span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        self._span.set_attribute("rpc.grpc.status_code_name", code)
        if code not in ("OK", "CANCELLED"):
            self._span.set_status(Status(StatusCode.ERROR, code))
        self._span.end()
        self._span = None


def metadata_traceparent(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == TRACEPARENT_KEY and isinstance(value, str):
            return value
    return None


def _tracer() -> Any:
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace.get_tracer("trt_gateway")
