"""Test helpers shared by every suite: a real gateway on a free loopback port, and polling for async conditions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from trt_gateway.config import from_mapping
from trt_gateway.executors.base import Executor
from trt_gateway.executors.echo import EchoExecutor
from trt_gateway.server.app import GatewayServer


@asynccontextmanager
async def running(engine: Executor | None = None, **config: Any) -> AsyncIterator[GatewayServer]:
    """A started GatewayServer on 127.0.0.1:<free port>.

    `engine` is the executor object (default: echo built from the config); `config` holds config-file sections
    (`server=`, `executor=`, `admission=`, `limits=`), so a test can give both, e.g. adapter roots and a slow echo.
    """
    server_cfg = {"host": "127.0.0.1", "port": 0, "grace_period_s": 5.0, "http": False, **config.pop("server", {})}
    executor_cfg = {"name": "echo", **config.pop("executor", {})}
    cfg = from_mapping({"server": server_cfg, "executor": executor_cfg, **config})
    server = GatewayServer(cfg, engine if engine is not None else EchoExecutor.from_config(cfg.executor))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0.5)


def target(server: GatewayServer) -> str:
    return f"127.0.0.1:{server.port}"


async def poll(condition: Callable[[], bool], timeout: float = 3.0, interval: float = 0.01) -> bool:
    """Wait until `condition()` holds; return whether it did within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(interval)
    return condition()
