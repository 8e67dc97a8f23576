"""Register the Gateway service with deserializers that never raise.

gRPC answers a request it cannot deserialize with UNKNOWN and the parser's exception text. A malformed message is the
client's error, so the handlers here get an `Undecodable` instead, and the RPC boundary turns it into
INVALID_ARGUMENT like any other bad input. Everything else matches the generated `add_GatewayServicer_to_server`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from trt_gateway.v1 import gateway_pb2


@dataclass(frozen=True)
class Undecodable:
    message_type: str
    reason: str


def _lenient(cls: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    def parse(data: bytes) -> Message | Undecodable:
        try:
            return cls.FromString(data)
        except DecodeError as exc:
            return Undecodable(cls.DESCRIPTOR.full_name, str(exc))

    return parse


def add_gateway_servicer(servicer: Any, server: grpc.aio.Server) -> None:
    service = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"]
    handlers = {}
    for method in service.methods:
        request_cls = getattr(gateway_pb2, method.input_type.name)
        response_cls = getattr(gateway_pb2, method.output_type.name)
        make = grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=_lenient(request_cls),
            response_serializer=response_cls.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
