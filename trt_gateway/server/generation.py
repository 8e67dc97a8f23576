"""One Generate / GenerateStream call, from admission to the last delta, with abort and cancellation designed in.

`n > 1` fans out into n executor requests ("<id>/<index>", seed + index) whose deltas are merged as they arrive.
Whatever way the call ends (finished, failed, client cancel, disconnect, deadline, shutdown), every executor request
that is still running is aborted in `finally`, so its KV blocks are freed by the executor's next step.

A call the server ends itself (`cut_off`: the drain's grace period is over) is aborted like any other, but raises the
server's error instead of finishing CANCELLED, so each door reports it as the server's doing: on gRPC a final ERROR
chunk and UNAVAILABLE, on HTTP an error event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field

from trt_gateway import errors, validation
from trt_gateway.executors.base import Executor
from trt_gateway.server.admission import Admission
from trt_gateway.types import Finish, FinishReason, GenerateRequest, TokenDelta, Usage

log = logging.getLogger(__name__)


@dataclass
class Handle:
    """What Abort needs to find a running call."""

    request_id: str
    sub_ids: tuple[str, ...]
    aborted: asyncio.Event = field(default_factory=asyncio.Event)
    ended: errors.GatewayError | None = None  # set when the server ends the call (shutdown); raised by `run`


class Registry:
    """Request id -> running call. Ids are unique among running calls."""

    def __init__(self) -> None:
        self._handles: dict[str, Handle] = {}
        self._empty = asyncio.Event()  # the drain waits on it
        self._empty.set()

    def __len__(self) -> int:
        return len(self._handles)

    def add(self, request_id: str, n: int, shown_id: str | None = None) -> Handle:
        """`shown_id`: the id as its caller knows it, for the error (the key is namespaced per tenant: auth.py)."""
        if request_id in self._handles:
            raise validation.duplicate_request_id(shown_id if shown_id is not None else request_id)
        subs = (request_id,) if n == 1 else tuple(f"{request_id}/{i}" for i in range(n))
        handle = self._handles[request_id] = Handle(request_id, subs)
        self._empty.clear()
        return handle

    def remove(self, handle: Handle) -> None:
        if self._handles.get(handle.request_id) is handle:
            del self._handles[handle.request_id]
            if not self._handles:
                self._empty.set()

    def get(self, request_id: str) -> Handle | None:
        return self._handles.get(request_id)

    def handles(self) -> list[Handle]:
        return list(self._handles.values())

    async def wait_empty(self) -> None:
        await self._empty.wait()


@dataclass
class Progress:
    """Timing of one call, for the final chunk's Timings and the metrics."""

    arrived: float = field(default_factory=time.monotonic)
    queue_s: float = 0.0
    first_token_at: float | None = None


@dataclass(frozen=True)
class Queued:
    """The request is waiting for admission at this 1-based position (only when it asked to be told)."""

    position: int


async def run(
    executor: Executor,
    admission: Admission,
    registry: Registry,
    request: GenerateRequest,
    n: int,
    progress: Progress,
    *,
    shown_id: str | None = None,
) -> AsyncGenerator[tuple[int, TokenDelta | Queued], None]:
    """Yield (output index, delta) until every output has finished; (-1, Queued) while waiting, if asked."""
    handle = registry.add(request.request_id, n, shown_id)
    try:
        async for position in _admit(admission, request, n, handle, progress):
            yield -1, Queued(position)
    except errors.Cancelled:
        registry.remove(handle)
        if handle.ended is not None:
            raise handle.ended from None
        for i in range(n):
            yield i, _cancelled_while_queued()
        return
    except BaseException:
        registry.remove(handle)
        raise
    unfinished = set(range(n))
    try:
        if n == 1:  # the common case: no tasks, no queue hop, no extra generator layer per token
            async for delta in executor.generate(request):
                if handle.ended is not None:  # cut off: what the executor sends after its abort is not an answer
                    raise handle.ended
                if delta.token_ids and progress.first_token_at is None:
                    progress.first_token_at = time.monotonic()
                if delta.finish is not None:
                    unfinished.clear()
                yield 0, delta
        else:
            subs = [_sub_request(request, sub_id, i) for i, sub_id in enumerate(handle.sub_ids)]
            async for index, delta in _merge(executor, subs):
                if handle.ended is not None:
                    raise handle.ended
                if delta.token_ids and progress.first_token_at is None:
                    progress.first_token_at = time.monotonic()
                if delta.finish is not None:
                    unfinished.discard(index)
                yield index, delta
        if handle.ended is not None and unfinished:  # an executor that ends a stream on abort without a finish
            raise handle.ended
    except Exception as exc:
        if handle.ended is not None and exc is not handle.ended:  # one that raises on abort
            raise handle.ended from exc
        raise
    finally:
        registry.remove(handle)
        admission.release()
        if unfinished:
            await _abort(executor, [handle.sub_ids[i] for i in unfinished])


def token_estimate(request: GenerateRequest, n: int) -> int:
    """What a request may need of the KV cache, before it is tokenized: prompt (about 3 characters a token for text)
    plus max_tokens for each output."""
    p = request.prompt
    if p.token_ids is not None:
        prompt = len(p.token_ids)
    elif p.messages is not None:
        prompt = sum(len(m.content) // 3 + 8 for m in p.messages)
    else:
        prompt = len(p.text or "") // 3 + 1
    return prompt + request.stopping.max_tokens * n


async def _admit(
    admission: Admission, request: GenerateRequest, n: int, handle: Handle, progress: Progress
) -> AsyncIterator[int]:
    """Wait for an admission slot, yielding queue positions when the request asked for them."""
    tokens = token_estimate(request, n)
    if not request.response.queue_position:
        progress.queue_s = await admission.acquire(request.priority, handle.aborted, tokens=tokens)
        return
    positions: asyncio.Queue[int] = asyncio.Queue()
    acquire = asyncio.ensure_future(
        admission.acquire(request.priority, handle.aborted, tokens=tokens, on_position=positions.put_nowait)
    )
    try:
        while not acquire.done():
            get = asyncio.ensure_future(positions.get())
            await asyncio.wait((acquire, get), return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
            if not get.done():
                get.cancel()
            elif not acquire.done():  # a position that is already stale once admitted is not worth sending
                yield get.result()
        progress.queue_s = acquire.result()  # raises what acquire raised (queue full, aborted while queued, ...)
    except BaseException:
        if not acquire.done():
            acquire.cancel()  # acquire's own cleanup gives the place (or a just-granted slot) back
            await asyncio.gather(acquire, return_exceptions=True)
        elif not acquire.cancelled() and acquire.exception() is None:
            admission.release()  # admitted, but nobody will run it now
        raise


def _cancelled_while_queued() -> TokenDelta:
    return TokenDelta(finish=Finish(FinishReason.CANCELLED, Usage()))


async def abort(executor: Executor, registry: Registry, request_id: str) -> bool:
    """The Abort RPC: idempotent; True if the call was still running or queued."""
    handle = registry.get(request_id)
    if handle is None:
        return await executor.abort(request_id)  # the executor may know ids the gateway did not assign
    handle.aborted.set()  # wakes it if it is still in the admission queue
    for sub in handle.sub_ids:
        await executor.abort(sub)
    return True


async def cut_off(executor: Executor, registry: Registry, error: Callable[[], errors.GatewayError]) -> int:
    """End every running or queued call now, each with its own `error()`. Returns how many were cut off."""
    handles = registry.handles()
    for handle in handles:
        handle.ended = error()
        handle.aborted.set()  # wakes the queued ones
    await _abort(executor, [sub for handle in handles for sub in handle.sub_ids])
    return len(handles)


async def _abort(executor: Executor, sub_ids: list[str]) -> None:
    for sub in sub_ids:
        try:
            await executor.abort(sub)
        except Exception:  # noqa: BLE001 - cleanup must not mask the original outcome
            log.exception("executor abort of %s failed", sub)


def _sub_request(request: GenerateRequest, sub_id: str, index: int) -> GenerateRequest:
    sampling = request.sampling
    if sampling.seed is not None:
        sampling = dataclasses.replace(sampling, seed=(sampling.seed + index) % 2**64)
    return dataclasses.replace(request, request_id=sub_id, sampling=sampling)


async def _merge(executor: Executor, subs: list[GenerateRequest]) -> AsyncIterator[tuple[int, TokenDelta]]:
    """The deltas of n > 1 executor requests, as they arrive, tagged with their output index."""
    queue: asyncio.Queue[tuple[int, TokenDelta | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, sub: GenerateRequest) -> None:
        try:
            async for delta in executor.generate(sub):
                await queue.put((index, delta))
            await queue.put((index, None))
        except Exception as exc:  # noqa: BLE001 - forwarded to the consumer, which re-raises it
            await queue.put((index, exc))

    tasks = [asyncio.create_task(pump(i, sub)) for i, sub in enumerate(subs)]
    try:
        running = len(tasks)
        while running:
            index, item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
