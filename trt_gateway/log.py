"""Logging with the request id, and the caller's W3C trace id when it sent a `traceparent`, in every record.

Both live in ContextVars set where a request enters (the RPC boundary, the HTTP routes), so every log line emitted
while serving it (in the servicer, the admission queue, an executor's coroutine) carries them without threading them
through call signatures. Prompts and outputs are never logged.
"""

from __future__ import annotations

import contextvars
import logging

from trt_gateway.tracing import trace_id_var

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("trt_gateway_request_id", default="-")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.trace_id = trace_id_var.get()
        return True


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s trace=%(trace_id)s] %(message)s"))
    root = logging.getLogger("trt_gateway")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
