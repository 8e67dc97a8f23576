"""The RPC boundary: the one place where exceptions become gRPC statuses, ids (request, W3C trace) enter the logs,
and RPCs are counted and traced.

Every servicer method is wrapped by `unary` or `stream`. A `GatewayError` becomes its status from the error table,
with the field / retry-after hint in trailing metadata; a client cancel or deadline is counted and re-raised;
anything else is a bug: logged with its traceback and answered INTERNAL (never the exception text, which may hold
user data).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import grpc

from trt_gateway import errors
from trt_gateway.log import request_id_var
from trt_gateway.server.decoding import Undecodable
from trt_gateway.server.metrics import Metrics
from trt_gateway.tracing import Trace, metadata_traceparent

log = logging.getLogger("trt_gateway.server")

REQUEST_ID_KEY = "x-request-id"
T = TypeVar("T")


def metadata_request_id(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and value:
            return value
    return None


def new_request_id() -> str:
    return uuid.uuid4().hex


@asynccontextmanager
async def guard(
    metrics: Metrics, method: str, context: grpc.aio.ServicerContext, cut_off: Callable[[], bool] = lambda: False
) -> AsyncIterator[None]:
    """`cut_off`: the server is ending the calls still running (the drain's grace is over), so a cancellation now is
    the server's doing, not the client's."""
    # Each RPC runs in its own task, with its own copy of the context: the id set here never leaks to other RPCs,
    # and it is not reset on the way out (a stream closed by the asyncgen finalizer runs in yet another context).
    request_id_var.set(metadata_request_id(context) or "-")
    trace = Trace(f"trt_gateway.v1.Gateway/{method}", metadata_traceparent(context.invocation_metadata()),
                  {"rpc.system": "grpc", "rpc.method": method})
    start = time.monotonic()
    code = grpc.StatusCode.OK
    try:
        yield
    except errors.GatewayError as exc:
        code = exc.code
        level = logging.ERROR if code == grpc.StatusCode.INTERNAL else logging.INFO
        log.log(level, "%s failed: %s %s", method, code.name, exc.message)
        await context.abort(code, exc.message, trailing_metadata=exc.trailing_metadata())
    except asyncio.CancelledError:
        remaining = context.time_remaining()
        if cut_off():  # counted when it was cut off (rejected{reason="shutdown"}); stuck in a write or an executor
            code = grpc.StatusCode.UNAVAILABLE
            log.info("%s ended by the server's shutdown", method)
        else:
            code = grpc.StatusCode.DEADLINE_EXCEEDED if remaining is not None and remaining <= 0 else grpc.StatusCode.CANCELLED
            log.info("%s ended by the client: %s", method, code.name)
        raise
    except grpc.aio.AbortError:
        code = context.code() or grpc.StatusCode.UNKNOWN  # type: ignore[assignment]
        raise
    except Exception:
        code = grpc.StatusCode.INTERNAL
        log.exception("%s failed with a bug", method)
        await context.abort(code, f"internal error (request id {request_id_var.get()})")
    finally:
        trace.end(code.name)
        metrics.requests.labels(method, code.name).inc()
        metrics.request_seconds.labels(method).observe(time.monotonic() - start)


def _check_decoded(request: Any) -> None:
    if isinstance(request, Undecodable):
        raise errors.InvalidArgument(
            f"request: not a valid {request.message_type} message ({request.reason})", field="request"
        )


def unary(method: str) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    def wrap(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(fn)
        async def handler(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
            async with guard(self.metrics, method, context, lambda: self.gateway.cut_off):
                _check_decoded(request)
                return await fn(self, request, context)
            raise AssertionError("unreachable: guard either returns or aborts")  # pragma: no cover

        return handler

    return wrap


def stream(method: str) -> Callable[[Callable[..., AsyncIterator[T]]], Callable[..., AsyncIterator[T]]]:
    def wrap(fn: Callable[..., AsyncIterator[T]]) -> Callable[..., AsyncIterator[T]]:
        @functools.wraps(fn)
        async def handler(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[T]:
            async with guard(self.metrics, method, context, lambda: self.gateway.cut_off):
                _check_decoded(request)
                async for item in fn(self, request, context):
                    yield item

        return handler

    return wrap
