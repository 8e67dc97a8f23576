"""Client test helpers: a real in-process gateway, and the sync or async client behind one awaitable facade.

`AnyClient` drives `GatewayClient` from a worker thread (so the server's event loop keeps running) and
`AsyncGatewayClient` directly, so one test body covers both clients.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from trt_gateway import AsyncGatewayClient, GatewayClient
from trt_gateway.client import AsyncStream, Stream, StreamChunk
from trt_gateway.config import from_mapping
from trt_gateway.executors.base import Executor
from trt_gateway.executors.echo import EchoExecutor
from trt_gateway.server.app import GatewayServer


@asynccontextmanager
async def serve(engine: Executor | None = None, **config: Any) -> AsyncIterator[GatewayServer]:
    """A started gateway on 127.0.0.1:<free port>. Unlike tests/conftest.py's `running_gateway`, the executor
    object is `engine=`, so `executor=` can carry the executor config section (e.g. adapter roots) alongside it."""
    server_cfg = {"host": "127.0.0.1", "port": 0, "grace_period_s": 5.0, **config.pop("server", {})}
    cfg = from_mapping({"server": server_cfg, "executor": {"name": "echo"}, **config})
    server = GatewayServer(cfg, engine if engine is not None else EchoExecutor.from_config(cfg.executor))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0.5)


def target(server: GatewayServer) -> str:
    return f"127.0.0.1:{server.port}"


async def poll(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


_DONE = object()


def _next_or_done(stream: Stream) -> Any:
    try:
        return next(stream)
    except StopIteration:  # cannot cross asyncio.to_thread's future
        return _DONE


class AnyStream:
    """`Stream` or `AsyncStream` as an async iterator / async context manager."""

    def __init__(self, inner: Stream | AsyncStream) -> None:
        self.inner = inner

    @property
    def request_id(self) -> str | None:
        return self.inner.request_id

    async def __aenter__(self) -> AnyStream:
        if isinstance(self.inner, AsyncStream):
            await self.inner.__aenter__()
        else:
            await asyncio.to_thread(self.inner.__enter__)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __aiter__(self) -> AnyStream:
        return self

    async def __anext__(self) -> StreamChunk:
        if isinstance(self.inner, AsyncStream):
            return await self.inner.__anext__()
        chunk = await asyncio.to_thread(_next_or_done, self.inner)
        if chunk is _DONE:
            raise StopAsyncIteration
        return chunk  # type: ignore[no-any-return]

    async def close(self) -> None:
        if isinstance(self.inner, AsyncStream):
            await self.inner.close()
        else:
            await asyncio.to_thread(self.inner.close)

    async def take_then_break(self, k: int) -> list[StreamChunk]:
        """Iterate with a real `for` / `async for` loop over the stream itself and break after k chunks."""
        if isinstance(self.inner, AsyncStream):
            got: list[StreamChunk] = []
            async for chunk in self.inner:
                got.append(chunk)
                if len(got) == k:
                    break
            return got

        def run(stream: Stream) -> list[StreamChunk]:
            got = []
            for chunk in stream:
                got.append(chunk)
                if len(got) == k:
                    break
            return got

        return await asyncio.to_thread(run, self.inner)


class AnyClient:
    """Every client method as a coroutine: awaited directly (async) or run in a worker thread (sync)."""

    def __init__(self, inner: GatewayClient | AsyncGatewayClient) -> None:
        self.inner = inner
        self.is_async = isinstance(inner, AsyncGatewayClient)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if self.is_async:
            return method

        async def in_thread(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(method, *args, **kwargs)

        return in_thread

    def stream(self, *args: Any, **kwargs: Any) -> AnyStream:
        return AnyStream(self.inner.stream(*args, **kwargs))  # opening is lazy: nothing blocks here
