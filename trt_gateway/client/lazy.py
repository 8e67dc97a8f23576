"""What a framework adapter (LangChain, LlamaIndex, your own) needs from the client beyond `generate`/`stream`:
which request fields its callers may set, and a sync/async client pair built on first use with model info cached.

A framework model object is often built long before it is called (and LangChain's unit tests forbid sockets), so
nothing here connects at construction.
"""

from __future__ import annotations

import threading
from typing import Any

from trt_gateway.client._convert import GENERATE_KEYWORDS
from trt_gateway.client.async_client import AsyncGatewayClient
from trt_gateway.client.sync_client import GatewayClient
from trt_gateway.client.types import ModelInfo

# Every keyword `generate` / `stream` accept.
REQUEST_FIELDS = GENERATE_KEYWORDS
# Those a framework's caller may set per call: the prompt is the adapter's to set, and one call asks for one output
# (`n`); `echo` / `prompt_token_ids` would change what a chunk's text means.
CALL_FIELDS = frozenset(REQUEST_FIELDS - {"text", "messages", "token_ids", "n", "echo", "prompt_token_ids"})
# Connection options of GatewayClient / AsyncGatewayClient that an adapter exposes as fields of the same names.
CONNECTION_FIELDS = ("timeout", "max_retries", "api_key", "tls", "root_certificates", "client_certificate",
                     "client_key", "server_name_override")


def check_call_fields(fields: Any, where: str) -> None:
    """Refuse keys that are not CALL_FIELDS, naming them (for a framework's `model_kwargs`-style dict field)."""
    unknown = sorted(set(fields) - CALL_FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown request field(s) {unknown}; known: {sorted(CALL_FIELDS)}")


def connection_options(source: Any) -> dict[str, Any]:
    """The CONNECTION_FIELDS of `source` (a framework model object), secrets unwrapped (pydantic SecretStr)."""
    options = {}
    for name in CONNECTION_FIELDS:
        value: Any = getattr(source, name, None)
        unwrap = getattr(value, "get_secret_value", None)
        options[name] = unwrap() if unwrap is not None else value
    return options


class LazyClients:
    """A GatewayClient and an AsyncGatewayClient for one target, each built on first use and then shared
    (thread-safe), with `model_info` cached per model name."""

    def __init__(self, target: str, **options: Any) -> None:
        self.target = target
        self._options = options
        self._lock = threading.Lock()
        self._sync: GatewayClient | None = None
        self._async: AsyncGatewayClient | None = None
        self._infos: dict[str, ModelInfo] = {}

    @property
    def sync(self) -> GatewayClient:
        with self._lock:
            if self._sync is None:
                self._sync = GatewayClient(self.target, **self._options)
            return self._sync

    @property
    def aio(self) -> AsyncGatewayClient:
        """It opens one channel per event loop, on first use in that loop."""
        with self._lock:
            if self._async is None:
                self._async = AsyncGatewayClient(self.target, **self._options)
            return self._async

    def _cached(self, model: str) -> ModelInfo | None:
        with self._lock:
            return self._infos.get(model)

    def _remember(self, model: str, info: ModelInfo) -> ModelInfo:
        with self._lock:
            self._infos[model] = info
        return info

    def model_info(self, model: str) -> ModelInfo:
        return self._cached(model) or self._remember(model, self.sync.model_info(model))

    async def amodel_info(self, model: str) -> ModelInfo:
        return self._cached(model) or self._remember(model, await self.aio.model_info(model))


class SharedClients:
    """A descriptor giving a framework model object its LazyClients, for its `target` and CONNECTION_FIELDS:

        clients: ClassVar[SharedClients] = SharedClients()   # plus a `_clients` attribute holding None at first

    built on first access and kept in `_clients`, which copies of the object (`.bind`, `model_copy`) share."""

    _lock = threading.Lock()  # construction only: each LazyClients has its own lock for what it builds later

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        with self._lock:
            if obj._clients is None:
                obj._clients = LazyClients(obj.target, **connection_options(obj))
            return obj._clients
