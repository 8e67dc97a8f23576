"""Shared fixtures: a real gateway server on a free loopback port, in-process, with the echo executor."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from trt_gateway.config import from_mapping
from trt_gateway.executors.base import Executor
from trt_gateway.executors.echo import EchoExecutor
from trt_gateway.server.app import GatewayServer
from trt_gateway.v1 import gateway_pb2_grpc


@asynccontextmanager
async def running_gateway(
    executor: Executor | None = None, **config: Any
) -> AsyncIterator[GatewayServer]:
    """Start a GatewayServer on 127.0.0.1:<free port>; `config` is a nested mapping as in a config file."""
    server_cfg = {"host": "127.0.0.1", "port": 0, "grace_period_s": 5.0, **config.pop("server", {})}
    cfg = from_mapping({"server": server_cfg, "executor": {"name": "echo"}, **config})
    server = GatewayServer(cfg, executor if executor is not None else EchoExecutor.from_config(cfg.executor))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0.5)


@pytest.fixture
def gateway_factory() -> Callable[..., Any]:
    return running_gateway


@pytest.fixture
async def gateway() -> AsyncIterator[GatewayServer]:
    async with running_gateway() as server:
        yield server


@pytest.fixture
async def stub(gateway: GatewayServer) -> AsyncIterator[gateway_pb2_grpc.GatewayStub]:
    """A raw generated stub on an aio channel: what a client in any language sees."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        yield gateway_pb2_grpc.GatewayStub(channel)
