"""Stream coalescing: deltas that queue up while a stream's writer is busy leave as one chunk.

Python gRPC pays a fixed cost per message (a serialization, a batch operation, usually a `sendmsg` system call), and
that cost, not the executor, bounds a busy gateway. So a stream's deltas are read by a small pump task into a buffer,
and the writer takes everything buffered each time it is ready to send. A client that keeps up gets every delta as
it comes, exactly as without coalescing; a client, or a server, that falls behind gets fewer, larger chunks instead of
an ever-growing backlog. vLLM v1's per-request output collector merges outputs in the same way.

What must hold (tests in tests/server/test_server_coalescing.py):
  1. Nothing is ever held back to wait for company: the writer sends whatever is buffered the moment it is free, so the
     first token (and every later one) leaves no later than it would have one chunk per delta.
  2. Deltas of one output keep their order; the concatenated text, token ids and logprobs are exactly the executor's,
     so logprobs stay aligned with token ids.
  3. A finish ends a merge: the finish delta may absorb the tokens queued before it, never anything after it, so the
     finish chunk is still the output's last. An executor error is raised only after every delta before it was sent.
  4. Bounded: a merged chunk holds at most `max_tokens` tokens (one executor delta larger than that is not split),
     and the pump stops reading from the executor while that much is buffered.
  5. Queue-position items are never merged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from trt_gateway.types import TokenDelta

Item = tuple[int, Any]  # (output index, a TokenDelta, or anything else, e.g. a queue position: passed on unmerged)


async def coalesce(source: AsyncGenerator[Item, None], max_tokens: int) -> AsyncGenerator[Item, None]:
    """Yield `source`'s items, merging TokenDeltas of one output that queued up while the consumer was busy.

    `max_tokens` <= 1 turns coalescing off: `source` is passed through as is, with no pump task. Closing this generator
    (or cancelling its consumer) closes `source` (cancelling the pump that reads it) and waits for both.
    """
    if max_tokens <= 1:
        async with contextlib.aclosing(source):
            async for item in source:
                yield item
        return
    pump: asyncio.Task[None] | None = None
    try:
        # The first item is read here, in the consumer's own task: nothing can have queued behind it yet, and no
        # hop through the pump's task stands between the executor's first token and its write.
        try:
            first = await source.__anext__()
        except StopAsyncIteration:
            return
        yield first
        buffer = _Buffer(max_tokens)
        pump = asyncio.create_task(buffer.fill(source))
        while True:
            items = await buffer.take()
            if not items:
                return
            if len(items) == 1:
                yield items[0]
            else:
                for item in merge(items, max_tokens):
                    yield item
    finally:
        if pump is None:
            await source.aclose()
        else:
            pump.cancel()  # a no-op once it is done; otherwise its cleanup closes `source`
            # That cleanup (which aborts the executor request) finishes before the RPC does.
            await asyncio.gather(pump, return_exceptions=True)


class _Buffer:
    """Items read ahead by the pump task, handed to the writer in batches."""

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self.items: list[Item] = []
        self.tokens = 0  # tokens in `items`
        self.done = False
        self.error: BaseException | None = None
        self._loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[None] | None = None  # the writer waits here for items
        self._room: asyncio.Future[None] | None = None  # the pump waits here while the buffer is full

    async def fill(self, source: AsyncGenerator[Item, None]) -> None:
        """The pump: read `source` into the buffer until it ends, fails or this task is cancelled."""
        try:
            async with contextlib.aclosing(source):
                async for item in source:
                    self.items.append(item)
                    delta = item[1]
                    if type(delta) is TokenDelta:
                        self.tokens += len(delta.token_ids)
                    self._wake_writer()
                    if self.tokens >= self.max_tokens or len(self.items) >= self.max_tokens:
                        self._room = self._loop.create_future()
                        await self._room
        except Exception as exc:  # noqa: BLE001 - handed to the writer, which raises it after the items before it
            self.error = exc
        except BaseException as exc:  # cancelled from outside (not by the writer): the stream must not look finished
            self.error = exc
            raise
        finally:
            self.done = True
            self._wake_writer()

    async def take(self) -> list[Item]:
        """Everything buffered, waiting for at least one item; [] once the source ended; the source's error once
        every item before it was taken."""
        while not self.items and not self.done:
            self._ready = self._loop.create_future()
            try:
                await self._ready
            finally:
                self._ready = None
        items, self.items, self.tokens = self.items, [], 0
        room, self._room = self._room, None
        if room is not None and not room.done():
            room.set_result(None)
        if not items and self.error is not None:
            error, self.error = self.error, None
            raise error
        return items

    def _wake_writer(self) -> None:
        ready = self._ready
        if ready is not None and not ready.done():
            ready.set_result(None)


class _Run:
    """Consecutive TokenDeltas of one output, to be joined into one."""

    __slots__ = ("deltas", "tokens")

    def __init__(self, delta: TokenDelta) -> None:
        self.deltas = [delta]
        self.tokens = len(delta.token_ids)

    def join(self) -> TokenDelta:
        run = self.deltas
        if len(run) == 1:
            return run[0]
        return TokenDelta(
            text="".join(d.text for d in run),
            token_ids=tuple(t for d in run for t in d.token_ids),
            logprobs=tuple(lp for d in run for lp in d.logprobs),
            prompt=run[0].prompt,  # only an output's first delta carries one
            finish=run[-1].finish,  # only a run's last delta can carry one
            tool_calls=run[-1].tool_calls,  # as does the finish
            reasoning="".join(d.reasoning for d in run),
        )


def merge(items: list[Item], max_tokens: int) -> list[Item]:
    """Merge each output's TokenDeltas into chunks of at most `max_tokens` tokens (a finish closes a chunk).
    Chunks leave in order of their first delta; within one output, order is kept. Other items pass unmerged."""
    out: list[tuple[int, object]] = []
    open_runs: dict[int, _Run] = {}  # output index -> its run that may still grow
    for index, delta in items:
        if type(delta) is not TokenDelta:
            out.append((index, delta))
            continue
        run = open_runs.get(index)
        if run is not None and run.tokens + len(delta.token_ids) <= max_tokens:
            run.deltas.append(delta)
            run.tokens += len(delta.token_ids)
        else:
            run = open_runs[index] = _Run(delta)
            out.append((index, run))
        if delta.finish is not None:
            del open_runs[index]  # nothing after a finish joins it
    return [(index, x.join() if type(x) is _Run else x) for index, x in out]
