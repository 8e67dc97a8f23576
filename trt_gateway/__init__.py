"""trt-gateway: a gRPC gateway for LLM executors (TensorRT-LLM, or the embedded PyTorch engine)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from trt_gateway import errors
    from trt_gateway.client import AsyncGatewayClient, GatewayClient

__all__ = ["AsyncGatewayClient", "GatewayClient", "__version__", "errors"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import trt_gateway.engine` (e.g. on a GPU box without the client's dependencies) and
    # `import trt_gateway.types` stay light; `from trt_gateway import GatewayClient` works as usual.
    if name in ("GatewayClient", "AsyncGatewayClient"):
        from trt_gateway import client

        return getattr(client, name)
    if name == "errors":
        import importlib

        return importlib.import_module("trt_gateway.errors")
    raise AttributeError(f"module 'trt_gateway' has no attribute {name!r}")
