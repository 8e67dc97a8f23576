"""Fixtures of the executor contract: `driver` runs each test once per executor, `executor` is that executor, built
through the registry and started, and shut down after the test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from contract_drivers import DRIVERS, Driver

from trt_gateway.executors import registry
from trt_gateway.executors.base import Executor


@pytest.fixture(params=sorted(DRIVERS))
def driver(request: pytest.FixtureRequest) -> Driver:
    return DRIVERS[request.param]


@pytest.fixture
async def executor(driver: Driver, tmp_path: Path) -> AsyncIterator[Executor]:
    with driver.around():
        executor = registry.create(driver.config(tmp_path))
        await executor.start()
        try:
            yield executor
        finally:
            await executor.shutdown()
