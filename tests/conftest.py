"""Shared fixtures: a real gateway server on a free loopback port, in-process, with the echo executor."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from gateway_testing import running, target

from trt_gateway.server.app import GatewayServer
from trt_gateway.v1 import gateway_pb2_grpc


@pytest.fixture
async def gateway() -> AsyncIterator[GatewayServer]:
    async with running() as server:
        yield server


@pytest.fixture
async def stub(gateway: GatewayServer) -> AsyncIterator[gateway_pb2_grpc.GatewayStub]:
    """A raw generated stub on an aio channel: what a client in any language sees."""
    async with grpc.aio.insecure_channel(target(gateway)) as channel:
        yield gateway_pb2_grpc.GatewayStub(channel)
