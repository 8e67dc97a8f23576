"""`trt_gateway.testing`: the in-process gateway that user tests (and the adapters' suites) run against."""

from __future__ import annotations

import asyncio

from trt_gateway import AsyncGatewayClient, GatewayClient
from trt_gateway.executors.echo import EchoExecutor
from trt_gateway.testing import API_KEY, JSON_REPLY, REPLY, LiveGateway, Scripted


def test_blocking_and_async_clients_reach_a_live_gateway():
    with LiveGateway(EchoExecutor()) as target:
        with GatewayClient(target) as client:
            assert client.generate("one two three", max_tokens=3).text == "one"  # echo: a token per character

        async def from_another_loop() -> str:
            async with AsyncGatewayClient(target) as client:
                return (await client.generate("four five", max_tokens=64)).text

        assert asyncio.run(from_another_loop()) == "four five"


def test_scripted_executor_replies_and_records_behind_an_api_key():
    executor = Scripted()
    with LiveGateway(executor, server={"api_keys": [API_KEY]}) as target, GatewayClient(target, api_key=API_KEY) as c:
        assert c.generate("anything", max_tokens=64).text == REPLY
        guided = c.generate("anything", max_tokens=64, json_schema={"type": "object"})
        assert guided.text.replace(" ", "") == str(JSON_REPLY).replace("'", '"').replace(" ", "")
    assert [r.guided.json_schema is not None for r in executor.requests] == [False, True]
