"""Fixtures of the executor contract: `driver` runs each test once per executor, `executor` is that executor, built
through the registry and started, and shut down after the test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from contract_drivers import DRIVERS, Driver
from doubles import trtllm_control, vllm_control  # noqa: F401  (fixtures: a reset double, its engines shut down after)

from trt_gateway.executors import registry
from trt_gateway.executors.base import Executor


@pytest.fixture(params=sorted(DRIVERS))
def driver(request: pytest.FixtureRequest) -> Iterator[Driver]:
    driver = DRIVERS[request.param]
    if driver.double:
        request.getfixturevalue(f"{driver.double}_control")
    with driver.around():
        yield driver


@pytest.fixture
async def executor(driver: Driver, tmp_path: Path) -> AsyncIterator[Executor]:
    executor = registry.create(driver.config(tmp_path))
    await executor.start()
    try:
        yield executor
    finally:
        await executor.shutdown()
