"""Logging with the request id in every record.

The id lives in a ContextVar set at the RPC boundary, so every log line emitted while serving a request (in the
servicer, the admission queue, an executor's coroutine) carries it without threading it through call signatures.
Prompts and outputs are never logged.
"""

from __future__ import annotations

import contextvars
import logging

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("trt_gateway_request_id", default="-")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger("trt_gateway")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
