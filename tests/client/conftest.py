"""Client test fixtures. `client_kind` is parametrised, so every test that uses `connect` runs once with
`GatewayClient` and once with `AsyncGatewayClient`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from client_helpers import AnyClient, serve, target

from trt_gateway import AsyncGatewayClient, GatewayClient
from trt_gateway.server.app import GatewayServer


@pytest.fixture(params=["sync", "async"])
def client_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def connect(client_kind: str) -> AsyncIterator[Callable[..., AnyClient]]:
    """connect(server_or_target, **options) -> AnyClient; closed at teardown."""
    made: list[AnyClient] = []

    def make(where: GatewayServer | str | list[str], **options: Any) -> AnyClient:
        address = where if isinstance(where, (str, list)) else target(where)
        cls = AsyncGatewayClient if client_kind == "async" else GatewayClient
        made.append(AnyClient(cls(address, **options)))
        return made[-1]

    yield make
    for c in made:
        await c.close()


@pytest.fixture
async def gw() -> AsyncIterator[GatewayServer]:
    async with serve() as server:
        yield server
