"""The one error table: every class -> code -> class, trailing metadata hints, and `from_status` on the client side."""

from __future__ import annotations

import grpc
import pytest

from trt_gateway import errors

TABLE = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, False),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND, False),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS, False),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION, False),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED, True),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE, True),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED, False),
    (errors.Cancelled, grpc.StatusCode.CANCELLED, False),
    (errors.Unimplemented, grpc.StatusCode.UNIMPLEMENTED, False),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, False),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, False),
    (errors.Internal, grpc.StatusCode.INTERNAL, False),
]


def all_subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub, *all_subclasses(sub)}
    return out


@pytest.mark.parametrize(("cls", "code", "retryable"), TABLE, ids=[c.__name__ for c, *_ in TABLE])
def test_round_trip(cls, code, retryable) -> None:
    err = cls("boom", field="sampling.top_p", retry_after_s=0.25)
    assert err.code == code == errors.code_for(err)
    assert errors.class_for(code) is cls
    assert err.retryable is retryable
    back = errors.from_status(code, "boom", err.trailing_metadata())
    assert type(back) is cls
    assert back.message == "boom" and str(back) == "boom"
    assert back.field == "sampling.top_p"
    assert back.retry_after_s == 0.25


def test_every_gateway_error_is_in_the_table() -> None:
    listed = {cls for cls, *_ in TABLE}
    for cls in all_subclasses(errors.GatewayError):
        if cls is errors.EngineDead:
            continue
        assert cls in listed, f"{cls.__name__} has no row in the error table"
    assert len({code for _, code, _ in TABLE}) == len(TABLE)  # one class per code


def test_engine_dead_is_unavailable_and_retryable() -> None:
    err = errors.EngineDead("gone")
    assert isinstance(err, errors.Unavailable)
    assert err.code == grpc.StatusCode.UNAVAILABLE
    assert err.retryable
    assert errors.class_for(grpc.StatusCode.UNAVAILABLE) is errors.Unavailable


@pytest.mark.parametrize("code", [grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS, grpc.StatusCode.ABORTED,
                                  grpc.StatusCode.OUT_OF_RANGE])
def test_codes_outside_the_table_become_internal(code) -> None:
    assert errors.class_for(code) is errors.Internal
    assert isinstance(errors.from_status(code, "x"), errors.Internal)


def test_unknown_error_object_maps_to_internal() -> None:
    class Odd(errors.GatewayError):
        pass

    assert errors.code_for(Odd("x")) == grpc.StatusCode.INTERNAL


def test_trailing_metadata() -> None:
    assert errors.GatewayError("x").trailing_metadata() == ()
    assert errors.InvalidArgument("x", field="n").trailing_metadata() == (("error-field", "n"),)
    assert errors.ResourceExhausted("x", retry_after_s=1.5).trailing_metadata() == (("retry-after-ms", "1500"),)
    assert errors.ResourceExhausted("x", retry_after_s=0).trailing_metadata() == (("retry-after-ms", "0"),)
    assert errors.FIELD_KEY == "error-field" and errors.RETRY_AFTER_KEY == "retry-after-ms"


def test_from_status_parsing() -> None:
    md = (("retry-after-ms", "250"), ("error-field", "stopping.stop[2]"), ("x-other", "y"))
    err = errors.from_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", md)
    assert isinstance(err, errors.ResourceExhausted)
    assert err.retry_after_s == 0.25 and err.field == "stopping.stop[2]" and err.message == "queue full"
    # Missing or malformed hints are ignored, never an exception.
    for bad in ("abc", "-5", "1.5", ""):
        assert errors.from_status(grpc.StatusCode.UNAVAILABLE, "x", (("retry-after-ms", bad),)).retry_after_s is None
    assert errors.from_status(grpc.StatusCode.INVALID_ARGUMENT, "x", (("error-field-bin", b"\x00"),)).field is None
    assert errors.from_status(grpc.StatusCode.INVALID_ARGUMENT, "x", None).field is None
    # No details: the code name stands in.
    assert errors.from_status(grpc.StatusCode.NOT_FOUND, None).message == "NOT_FOUND"
    assert errors.from_status(grpc.StatusCode.NOT_FOUND, "").message == "NOT_FOUND"
