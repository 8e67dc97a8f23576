"""Client-side round-robin over several gateways, and a gateway killed mid-run: no request is lost."""

from __future__ import annotations

import asyncio

import pytest
from client_helpers import serve, target

from trt_gateway import GatewayClient


def served(server) -> float:  # noqa: ANN001 - a GatewayServer
    value = server.metrics.registry.get_sample_value(
        "trt_gateway_requests_total", {"method": "Generate", "code": "OK"}
    )
    return value or 0.0


async def test_round_robin_spreads_calls_and_survives_a_dead_gateway(connect):
    async with serve() as a, serve() as b:
        client = connect([target(a), target(b)], max_retries=5)
        for i in range(20):
            assert (await client.generate(f"r{i}", max_tokens=2)).text == f"r{i}"[:2]
        assert served(a) >= 5 and served(b) >= 5  # both got a share
        await b.stop(0)  # one gateway goes away mid-run
        results = await asyncio.gather(*(client.generate(f"s{i}", max_tokens=2) for i in range(20)))
        assert [r.text for r in results] == [f"s{i}"[:2] for i in range(20)]


def test_a_list_of_host_names_is_refused_with_a_hint():
    with pytest.raises(ValueError, match="dns:///"):
        GatewayClient(["gw-a.internal:50051", "gw-b.internal:50051"])
