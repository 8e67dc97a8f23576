"""The Python client: `GatewayClient` (blocking) and `AsyncGatewayClient` (asyncio), mirrored method for method.

    with GatewayClient("localhost:50051") as client:
        print(client.generate("Hello", max_tokens=32).text)
        with client.stream("Hello", max_tokens=32) as stream:
            for chunk in stream:
                print(chunk.text, end="")

Results are frozen dataclasses; errors are the typed exceptions of `trt_gateway.errors`. This package never imports
torch.
"""

from __future__ import annotations

from trt_gateway.client._base import ClientOptions
from trt_gateway.client._convert import GenerateParams
from trt_gateway.client.async_client import AsyncGatewayClient
from trt_gateway.client.lazy import (
    CALL_FIELDS,
    CONNECTION_FIELDS,
    REQUEST_FIELDS,
    LazyClients,
    SharedClients,
    check_call_fields,
    connection_options,
)
from trt_gateway.client.streaming import AsyncStream, Stream
from trt_gateway.client.sync_client import GatewayClient
from trt_gateway.client.types import Completion, ModelInfo, ModelLimits, Output, StreamChunk, Timings
from trt_gateway.types import (
    AdapterInfo,
    Capabilities,
    PromptInfo,
    Residency,
    TokenLogprob,
    Tool,
    ToolCall,
    TopLogprob,
    Usage,
)

__all__ = [
    "CALL_FIELDS",
    "CONNECTION_FIELDS",
    "REQUEST_FIELDS",
    "AdapterInfo",
    "AsyncGatewayClient",
    "AsyncStream",
    "Capabilities",
    "ClientOptions",
    "Completion",
    "GatewayClient",
    "GenerateParams",
    "LazyClients",
    "ModelInfo",
    "ModelLimits",
    "Output",
    "PromptInfo",
    "Residency",
    "SharedClients",
    "Stream",
    "StreamChunk",
    "Timings",
    "TokenLogprob",
    "Tool",
    "ToolCall",
    "TopLogprob",
    "Usage",
    "check_call_fields",
    "connection_options",
]
