"""Shared helpers for the server tests: raw stubs on real loopback channels, polling, scripted executors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
from gateway_testing import poll, running, target  # noqa: F401  (re-exported for the server tests)

from trt_gateway.executors.echo import EchoExecutor
from trt_gateway.server.app import GatewayServer
from trt_gateway.types import GenerateRequest, TokenDelta
from trt_gateway.v1 import gateway_pb2 as pb
from trt_gateway.v1 import gateway_pb2_grpc as pb_grpc

SLOW = {"token_delay_s": 0.05}


@asynccontextmanager
async def open_stub(server: GatewayServer) -> AsyncIterator[pb_grpc.GatewayStub]:
    async with grpc.aio.insecure_channel(target(server)) as channel:
        yield pb_grpc.GatewayStub(channel)


def md(metadata: Any) -> dict[str, str]:
    return {k: v for k, v in (metadata or ()) if isinstance(v, str)}


async def collect(call: Any) -> list[pb.GenerateStreamResponse]:
    return [chunk async for chunk in call]


def text_req(text: str = "hello", **kwargs: Any) -> pb.GenerateRequest:
    return pb.GenerateRequest(text=text, **kwargs)


def long_req(max_tokens: int = 200, **kwargs: Any) -> pb.GenerateRequest:
    """A request that runs for `max_tokens` tokens (the echo script repeats with ignore_eos)."""
    return pb.GenerateRequest(
        text=kwargs.pop("text", "abcdefgh"),
        stopping=pb.StoppingCriteria(max_tokens=max_tokens, ignore_eos=True),
        **kwargs,
    )


class FailingEcho(EchoExecutor):
    """Echo that raises `error` after `after` deltas (0: before the first one) for prompts starting with "fail"."""

    def __init__(self, error: BaseException, after: int, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.error = error
        self.after = after

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenDelta]:
        fail = (request.prompt.text or "").startswith("fail")
        count = 0
        async for delta in super().generate(request):
            if fail and count == self.after:
                raise self.error
            count += 1
            yield delta


class GatedEcho(EchoExecutor):
    """Echo that records the order in which requests start and holds each one until `release` is set."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.started: list[str] = []
        self.release = asyncio.Event()

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenDelta]:
        self.started.append(request.prompt.text or "")
        await self.release.wait()
        async for delta in super().generate(request):
            yield delta

