"""trt-gateway: a gRPC gateway for LLM executors (TensorRT-LLM, or the embedded PyTorch engine)."""

from __future__ import annotations

__version__ = "0.1.0"

from trt_gateway import errors  # noqa: E402
from trt_gateway.client import AsyncGatewayClient, GatewayClient  # noqa: E402

__all__ = ["AsyncGatewayClient", "GatewayClient", "__version__", "errors"]
