"""The bounded admission queue in front of the executor.

At most `max_inflight` requests are handed to the executor at once. Beyond that, requests wait here, highest priority
first (FIFO within a priority), bounded both by count (`max_queued`) and by the tokens they may need
(`max_queued_tokens`: prompt estimate + max_tokens x n). A request that does not fit gets RESOURCE_EXHAUSTED with a
retry-after hint. While draining, new requests get UNAVAILABLE but already-queued ones are still served: an accepted
request is never dropped.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from trt_gateway import errors
from trt_gateway.config import AdmissionConfig
from trt_gateway.server.metrics import Metrics


@dataclass(order=True)
class _Waiter:
    key: tuple[int, int]  # (-priority, arrival): heap order is service order
    tokens: int = field(compare=False)
    future: asyncio.Future[None] = field(compare=False)
    on_position: Callable[[int], None] | None = field(compare=False, default=None)
    last_position: int = field(compare=False, default=0)


class Admission:
    def __init__(self, config: AdmissionConfig, metrics: Metrics) -> None:
        self.config = config
        self._metrics = metrics
        self._inflight = 0
        self._waiters: list[_Waiter] = []  # a heap; entries whose future is done are dropped lazily
        self._queued_tokens = 0
        self._seq = itertools.count()
        self._closed = False

    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def queued(self) -> int:
        return sum(1 for w in self._waiters if not w.future.done())

    def close(self) -> None:
        """Refuse new requests from now on (draining); waiting ones keep their place."""
        self._closed = True

    def check_open(self) -> None:
        """Raise UNAVAILABLE once closed (draining)."""
        if self._closed:
            self._metrics.rejected.labels("draining").inc()
            raise errors.Unavailable("the server is shutting down; retry on another replica")

    def retry_after_s(self) -> float:
        # Scale the hint with the backlog: a full queue drains in roughly queued/max_inflight service times.
        return self.config.retry_after_s * max(1.0, self.queued / self.config.max_inflight)

    async def acquire(
        self,
        priority: int = 0,
        abort: asyncio.Event | None = None,
        *,
        tokens: int = 0,
        on_position: Callable[[int], None] | None = None,
    ) -> float:
        """Wait for a slot; return the seconds waited. Raise Cancelled if `abort` is set while waiting.

        `on_position(n)` is called with the 1-based queue position when the request starts waiting and whenever it
        moves up.
        """
        self.check_open()
        queued = self.queued
        if self._inflight < self.config.max_inflight and not queued:
            self._take()
            self._metrics.queue_seconds.observe(0.0)
            return 0.0
        self._check_room(queued, tokens)
        start = time.monotonic()
        waiter = _Waiter((-priority, next(self._seq)), tokens, asyncio.get_running_loop().create_future(), on_position)
        heapq.heappush(self._waiters, waiter)
        self._queued_tokens += tokens
        self._metrics.queue_depth.set(queued + 1)
        self._report_positions()
        abort_wait = asyncio.ensure_future(abort.wait()) if abort is not None else None
        fut = waiter.future
        try:
            if abort_wait is None:
                await fut
            else:
                await asyncio.wait((fut, abort_wait), return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
                if not fut.done():
                    raise errors.Cancelled("request aborted while queued")
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed to us just as we gave up: pass it on
            else:
                fut.cancel()
                self._queued_tokens -= tokens
                self._report_positions()
            raise
        finally:
            if abort_wait is not None:
                abort_wait.cancel()
            self._metrics.queue_depth.set(self.queued)
        waited = time.monotonic() - start
        self._metrics.queue_seconds.observe(waited)
        return waited

    def _check_room(self, queued: int, tokens: int) -> None:
        cfg = self.config
        if queued >= cfg.max_queued:
            reason = f"admission queue is full ({cfg.max_queued} waiting, {self._inflight} running)"
        elif queued and self._queued_tokens + tokens > cfg.max_queued_tokens:
            # An empty queue always takes one request, however large, so nothing is refused for ever.
            reason = (
                f"admission queue is full by tokens ({self._queued_tokens} queued + {tokens} requested > "
                f"max_queued_tokens {cfg.max_queued_tokens})"
            )
        else:
            return
        self._metrics.rejected.labels("queue_full").inc()
        raise errors.ResourceExhausted(reason, retry_after_s=self.retry_after_s())

    def release(self) -> None:
        self._inflight -= 1
        while self._waiters:
            waiter = heapq.heappop(self._waiters)
            if not waiter.future.done():
                self._queued_tokens -= waiter.tokens
                self._take()
                waiter.future.set_result(None)
                break
        self._metrics.inflight.set(self._inflight)
        self._report_positions()

    def _take(self) -> None:
        self._inflight += 1
        self._metrics.inflight.set(self._inflight)

    def _report_positions(self) -> None:
        """Tell waiters that asked for it where they stand now (only when it changed)."""
        if not any(w.on_position is not None and not w.future.done() for w in self._waiters):
            return
        live = sorted(w for w in self._waiters if not w.future.done())
        for position, waiter in enumerate(live, start=1):
            if waiter.on_position is not None and waiter.last_position != position:
                waiter.last_position = position
                waiter.on_position(position)
        self._metrics.queue_depth.set(len(live))
