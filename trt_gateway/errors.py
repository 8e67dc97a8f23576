"""The one error hierarchy and the one table that maps it to gRPC status codes.

The server raises these and `server/boundary.py` turns them into a status; the client turns a status back into the
same class with `from_status`. Everything that is not a `GatewayError` reaching the boundary is a bug: INTERNAL.

Recoverable errors fail one request. `EngineDead` is fatal: the executor cannot serve anything any more, so health goes
NOT_SERVING and the process exits for its supervisor to restart it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc

RETRY_AFTER_KEY = "retry-after-ms"  # trailing metadata on RESOURCE_EXHAUSTED / UNAVAILABLE
FIELD_KEY = "error-field"  # trailing metadata naming the offending request field, when there is one
# Status details travel in HTTP/2 headers (gRPC's default limit is 16 KiB for them all): a message echoing a huge
# user value would make the client fail with a metadata-size error instead of reading the real status.
MAX_MESSAGE_CHARS = 2048
QUOTE_CHARS = 80  # how much of a user value a message or a log line shows


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """A user-supplied value as a message or a log line shows it: repr'd, at most `limit` characters of it, and its
    full length when cut. The one way user values are quoted, so no message or log line grows with the input."""
    text = value if isinstance(value, str) else str(value)
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def cut(text: str, limit: int) -> str:
    """Text that may hold a user value (a parser's message quoting its input), unquoted, at most `limit` characters."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class GatewayError(Exception):
    """Base class. `retryable` says whether sending the same request again may succeed."""

    retryable = False

    def __init__(self, message: str, *, field: str | None = None, retry_after_s: float | None = None) -> None:
        message = cut(message, MAX_MESSAGE_CHARS)  # the last guard: every quoted value should be cut already
        super().__init__(message)
        self.message = message
        self.field = field
        self.retry_after_s = retry_after_s

    @property
    def code(self) -> grpc.StatusCode:
        return code_for(self)

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        md: list[tuple[str, str]] = []
        if self.field:
            md.append((FIELD_KEY, self.field))
        if self.retry_after_s is not None:
            md.append((RETRY_AFTER_KEY, str(int(self.retry_after_s * 1000))))
        return tuple(md)


class InvalidArgument(GatewayError):
    """The request is malformed or over a limit; the message names the field and the limit."""


class NotFound(GatewayError):
    """Unknown model, adapter or request id."""


class AlreadyExists(GatewayError):
    """An adapter name is already registered with a different path."""


class FailedPrecondition(GatewayError):
    """The operation is valid but not in the current state (e.g. unloading an adapter that is in use)."""


class ResourceExhausted(GatewayError):
    """The admission queue is full, or the executor ran out of memory for this request."""

    retryable = True


class Unavailable(GatewayError):
    """Starting, draining or shutting down."""

    retryable = True


class EngineDead(Unavailable):
    """The executor has failed for good. Fatal for the process, UNAVAILABLE for the request."""


class DeadlineExceeded(GatewayError):
    pass


class Cancelled(GatewayError):
    pass


class Unimplemented(GatewayError):
    """The executor lacks a capability the request asked for."""


class Unauthenticated(GatewayError):
    pass


class PermissionDenied(GatewayError):
    pass


class Internal(GatewayError):
    """A bug. Never raised on purpose for bad input."""


@dataclass(frozen=True, slots=True)
class Row:
    """How one error class reads on each wire: its gRPC status, and for the OpenAI HTTP API its status and type."""

    cls: type[GatewayError]
    grpc_code: grpc.StatusCode
    http_status: int
    http_type: str


# The one table. Order matters for subclasses: the first class an error is an instance of wins. HTTP statuses follow
# what OpenAI clients retry on: 429 and 503 are retried by the official SDKs, 400-404 are not; 500 only for bugs.
_TABLE: Sequence[Row] = (
    Row(InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, 400, "invalid_request_error"),
    Row(NotFound, grpc.StatusCode.NOT_FOUND, 404, "not_found_error"),
    Row(AlreadyExists, grpc.StatusCode.ALREADY_EXISTS, 409, "conflict_error"),
    Row(FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION, 400, "invalid_request_error"),
    Row(ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "rate_limit_error"),
    Row(Unavailable, grpc.StatusCode.UNAVAILABLE, 503, "service_unavailable_error"),
    Row(DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED, 504, "timeout_error"),
    Row(Cancelled, grpc.StatusCode.CANCELLED, 499, "cancelled_error"),
    Row(Unimplemented, grpc.StatusCode.UNIMPLEMENTED, 400, "invalid_request_error"),
    Row(Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, 401, "authentication_error"),
    Row(PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, 403, "permission_error"),
    Row(Internal, grpc.StatusCode.INTERNAL, 500, "server_error"),
)
_INTERNAL = _TABLE[-1]


def row_for(error: BaseException) -> Row:
    """The table row of an error; anything that is not a GatewayError is a bug (INTERNAL / 500)."""
    for row in _TABLE:
        if isinstance(error, row.cls):
            return row
    return _INTERNAL


def code_for(error: GatewayError) -> grpc.StatusCode:
    return row_for(error).grpc_code


def class_for(code: grpc.StatusCode) -> type[GatewayError]:
    for row in _TABLE:
        if row.grpc_code == code:
            return row.cls
    return Internal


def from_status(
    code: grpc.StatusCode, details: str | None, trailing_metadata: Sequence[tuple[str, str | bytes]] | None = None
) -> GatewayError:
    """Rebuild the typed error from a received status (client side)."""
    md = {k: v for k, v in (trailing_metadata or ()) if isinstance(v, str)}
    retry_after = md.get(RETRY_AFTER_KEY)
    return class_for(code)(
        details or code.name,
        field=md.get(FIELD_KEY),
        retry_after_s=int(retry_after) / 1000 if retry_after and retry_after.isdigit() else None,
    )
