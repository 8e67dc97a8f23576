"""API-key authentication (an interceptor) and per-key authorization: scopes, ownership of requests, admin rights.

Keys come from `server.api_keys` (full access, admin) and `server.scoped_api_keys` (limited to some models and
adapters; admin only with `admin = true`). The interceptor only sees metadata, so it authenticates; the gateway, which
sees the request, checks the scope. Health checks and reflection stay open, so load balancers and grpcurl can probe a
server that requires keys. Keys are compared in constant time.

Tenants (docs/security.md): with keys configured, each key is a tenant and owns the requests it starts. Its request
ids live in its own namespace: the gateway and the executor see `k<index>:<id>`, the client only ever `<id>`. So
another key's Abort of the same id names a different request (found=false), and two keys may run the same id at
once without either learning of the other. With no keys there is one tenant and ids are used as given.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from trt_gateway import errors
from trt_gateway.config import ScopedApiKey, ServerConfig

OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
FULL_ACCESS = ScopedApiKey(key="", models=("*",), adapters=("*",), admin=True)
UNAUTHENTICATED = "missing or invalid API key (authorization: Bearer <key>)"


@dataclass(frozen=True)
class Caller:
    """Who sent a call: what its key may use, and the namespace of the request ids it owns."""

    scope: ScopedApiKey
    namespace: str  # "" with auth off; "k<index>:" otherwise (an index into the configured keys, never the key)

    @property
    def admin(self) -> bool:
        return self.scope.admin

    def owned_id(self, request_id: str) -> str:
        """The id the gateway and the executor know this caller's request by."""
        return self.namespace + request_id

    def may_use_model(self, model: str) -> bool:
        return "*" in self.scope.models or model in self.scope.models

    def may_use_adapter(self, adapter: str) -> bool:
        return "*" in self.scope.adapters or adapter in self.scope.adapters

    def check_model(self, model: str, *, default: bool = False) -> None:
        if not self.may_use_model(model):  # checked before existence, so a refusal does not tell whether it exists
            what = "the default model (name one in `model`)" if default else f"model {model[:200]!r}"
            raise errors.PermissionDenied(f"this API key may not use {what}", field="model")

    def check_adapter(self, adapter: str) -> None:
        if not self.may_use_adapter(adapter):
            what = f"adapter {adapter[:200]!r}" if adapter else "the base model without an adapter"
            raise errors.PermissionDenied(f"this API key may not use {what}", field="adapter")

    def check_admin(self, what: str) -> None:
        if not self.admin:
            raise errors.PermissionDenied(
                f"{what} needs an admin API key (server.api_keys, or server.scoped_api_keys with admin = true)",
                field="authorization",
            )


OPEN = Caller(FULL_ACCESS, "")  # auth off: one tenant, full access


class Keys:
    """Every configured key and what it may use."""

    def __init__(self, config: ServerConfig) -> None:
        scopes = [FULL_ACCESS] * len(config.api_keys) + list(config.scoped_api_keys)
        secrets = [k.encode() for k in config.api_keys] + [s.key.encode() for s in config.scoped_api_keys]
        self._scopes = [(secret, Caller(scope, f"k{i}:")) for i, (secret, scope) in enumerate(zip(secrets, scopes, strict=True))]

    @property
    def enabled(self) -> bool:
        return bool(self._scopes)

    def scope(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> ScopedApiKey | None:
        """The scope of the key the call carries, or None when it carries no valid key."""
        found = self._find(metadata)
        return found.scope if found is not None else None

    def _find(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Caller | None:
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                given = value[len("Bearer ") :].encode()
                found = None
                for secret, caller in self._scopes:  # no early exit: the time taken does not depend on which key
                    if hmac.compare_digest(given, secret):
                        found = caller
                return found
        return None

    def caller(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Caller:
        """Who sent the call; raises Unauthenticated when keys are configured and it carries no valid one."""
        if not self.enabled:
            return OPEN
        found = self._find(metadata)
        if found is None:  # the interceptor lets no such call through; refuse anyway if it is ever bypassed
            raise errors.Unauthenticated(UNAUTHENTICATED)
        return found


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
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED)

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
