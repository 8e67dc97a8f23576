"""`Stream` and `AsyncStream`: one GenerateStream call as an (async) iterator and an (async) context manager.

A stream opens lazily, on entering its `with` block or on the first `next`: opening sends the request and waits for
the first chunk, and only that part is retried (see `_base.RetryPolicy`). After a chunk was handed out, an error is
raised as it comes, after any terminal ERROR chunks the server sent first.

Closing the stream (`close()`, leaving the `with` block, or breaking out of a `for` / `async for` loop over it)
cancels the RPC; the server then aborts the executor request and frees its KV blocks. Errors the server sends are
raised as the typed exceptions of `trt_gateway.errors`; a stream closed by its user simply ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any

import grpc

from trt_gateway.client._base import error_from_rpc
from trt_gateway.client._convert import stream_chunk
from trt_gateway.client.types import StreamChunk
from trt_gateway.v1 import gateway_pb2 as pb

First = pb.GenerateStreamResponse | None  # the first message, or None when the stream ended without one


class _StreamState:
    """What both stream kinds track: the call, a first chunk not yet handed out, and whether the call is over."""

    def __init__(self, request_id: str | None) -> None:
        self.request_id = request_id  # the given id; the server's once the stream is open
        self._call: Any = None  # a sync `grpc.Call` iterator or a `grpc.aio.UnaryStreamCall`
        self._first: First = None
        self._opened = False
        self._done = False  # ended, failed or closed: no more chunks

    def _set_open(self, call: Any, first: First) -> None:
        self._call, self._first, self._opened = call, first, True
        if first is None:
            self._done = True
        elif first.request_id:
            self.request_id = first.request_id

    def _take_first(self) -> StreamChunk | None:
        if self._first is None:
            return None
        first, self._first = self._first, None
        return stream_chunk(first)

    def _cancel(self) -> None:
        if not self._done and self._call is not None:
            self._call.cancel()
        self._done = True
        self._first = None


class Stream(_StreamState):
    """Chunks of a GenerateStream call (sync). Iterate it once; close it or use it in a `with` block."""

    def __init__(self, open_call: Callable[[], tuple[Any, First]], request_id: str | None = None) -> None:
        super().__init__(request_id)
        self._open_call = open_call

    def _open(self) -> None:
        if self._opened or self._done:
            return
        self._done = True  # until the open succeeds: a failed open is not retried by iterating again
        call, first = self._open_call()
        self._done = False
        self._set_open(call, first)

    def __enter__(self) -> Stream:
        self._open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __next__(self) -> StreamChunk:
        self._open()
        first = self._take_first()
        if first is not None:
            return first
        if self._done:
            raise StopIteration
        try:
            msg = next(self._call)
        except StopIteration:
            self._done = True
            raise
        except grpc.RpcError as exc:
            self._done = True
            raise error_from_rpc(exc) from exc
        except BaseException:  # KeyboardInterrupt and friends: do not leave the RPC running
            self._cancel()
            raise
        return stream_chunk(msg)

    def __iter__(self) -> Iterator[StreamChunk]:
        # A generator, so that leaving a `for` loop early (break, exception) closes it and cancels the RPC.
        try:
            while True:
                try:
                    chunk = next(self)
                except StopIteration:
                    return
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        """Cancel the RPC if it is still running. Idempotent."""
        self._cancel()


class AsyncStream(_StreamState):
    """Chunks of a GenerateStream call (asyncio). Iterate it once; close it or use it in an `async with` block."""

    def __init__(self, open_call: Callable[[], Awaitable[tuple[Any, First]]], request_id: str | None = None) -> None:
        super().__init__(request_id)
        self._open_call = open_call

    async def _open(self) -> None:
        if self._opened or self._done:
            return
        self._done = True  # until the open succeeds
        call, first = await self._open_call()
        self._done = False
        self._set_open(call, first)

    async def __aenter__(self) -> AsyncStream:
        await self._open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def __anext__(self) -> StreamChunk:
        await self._open()
        first = self._take_first()
        if first is not None:
            return first
        if self._done:
            raise StopAsyncIteration
        try:
            msg = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            self._done = True
            raise error_from_rpc(exc) from exc
        except BaseException:  # CancelledError included: the task gave up, so does the RPC
            self._cancel()
            raise
        if msg is grpc.aio.EOF:
            self._done = True
            raise StopAsyncIteration
        return stream_chunk(msg)

    def __aiter__(self) -> AsyncIterator[StreamChunk]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[StreamChunk]:
        # An async generator: leaving `async for` early closes it (via the event loop's async-generator hooks, or
        # at once under `contextlib.aclosing`), and `finally` cancels the RPC.
        try:
            while True:
                try:
                    chunk = await self.__anext__()
                except StopAsyncIteration:
                    return
                yield chunk
        finally:
            self._cancel()

    async def close(self) -> None:
        """Cancel the RPC if it is still running. Idempotent."""
        self._cancel()

    aclose = close  # for contextlib.aclosing
