"""API-key authentication (an interceptor) and per-key authorization of models and adapters (in the servicer).

Keys come from `server.api_keys` (full access) and `server.scoped_api_keys` (limited to some models and adapters).
The interceptor only sees metadata, so it authenticates; the servicer, which sees the request, checks the scope.
Health checks and reflection stay open, so load balancers and grpcurl can probe a server that requires keys. Keys are
compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from trt_gateway import errors
from trt_gateway.config import ScopedApiKey, ServerConfig

OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
FULL_ACCESS = ScopedApiKey(key="", models=("*",), adapters=("*",))


class Keys:
    """Every configured key and what it may use."""

    def __init__(self, config: ServerConfig) -> None:
        self._scopes = [(k.encode(), FULL_ACCESS) for k in config.api_keys]
        self._scopes += [(s.key.encode(), s) for s in config.scoped_api_keys]

    @property
    def enabled(self) -> bool:
        return bool(self._scopes)

    def scope(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> ScopedApiKey | None:
        """The scope of the key the call carries, or None when it carries no valid key."""
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                given = value[len("Bearer ") :].encode()
                found = None
                for secret, scope in self._scopes:  # no early exit: the time taken does not depend on which key
                    if hmac.compare_digest(given, secret):
                        found = scope
                return found
        return None

    def authorize(self, metadata: Sequence[tuple[str, str | bytes]] | None, *, model: str, adapter: str = "") -> None:
        """Raise PermissionDenied if the call's key may not use this model / adapter ("" = the base model)."""
        if not self.enabled:
            return
        scope = self.scope(metadata)
        if scope is None:  # the interceptor lets no such call through; refuse anyway if it is ever bypassed
            raise errors.Unauthenticated("missing or invalid API key (authorization: Bearer <key>)")
        if "*" not in scope.models and model not in scope.models:
            raise errors.PermissionDenied(f"this API key may not use model {model!r}", field="model")
        if "*" not in scope.adapters and adapter not in scope.adapters:
            what = f"adapter {adapter!r}" if adapter else "the base model without an adapter"
            raise errors.PermissionDenied(f"this API key may not use {what}", field="adapter")


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, keys: Keys) -> None:
        self._keys = keys

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_PREFIXES):
            return handler
        if self._keys.scope(details.invocation_metadata) is not None:
            return handler
        return _refusing(handler)


def _refusing(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that answers UNAUTHENTICATED."""

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid API key (authorization: Bearer <key>)")

    async def deny_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await deny(request, context)
        yield  # pragma: no cover - makes this an async generator

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny_stream, **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny, **kwargs)
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(deny_stream, **kwargs)
    return grpc.unary_unary_rpc_method_handler(deny, **kwargs)
