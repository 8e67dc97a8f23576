"""Client test helpers: a real in-process gateway, and the sync or async client behind one awaitable facade.

`AnyClient` drives `GatewayClient` from a worker thread (so the server's event loop keeps running) and
`AsyncGatewayClient` directly, so one test body covers both clients.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway_testing import poll, running, target  # noqa: F401  (re-exported for the client tests)

from trt_gateway import AsyncGatewayClient, GatewayClient
from trt_gateway.client import AsyncStream, Stream, StreamChunk

serve = running


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
