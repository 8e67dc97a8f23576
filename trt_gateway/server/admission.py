"""The bounded admission queue in front of the executor.

At most `max_inflight` requests are handed to the executor at once; up to `max_queued` more wait here, highest
priority first (FIFO within a priority). Beyond that, RESOURCE_EXHAUSTED with a retry-after hint. While draining, new
requests get UNAVAILABLE but already-queued ones are still served: an accepted request is never dropped.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time

from trt_gateway import errors
from trt_gateway.config import AdmissionConfig
from trt_gateway.server.metrics import Metrics


class Admission:
    def __init__(self, config: AdmissionConfig, metrics: Metrics) -> None:
        self.config = config
        self._metrics = metrics
        self._inflight = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []  # (-priority, seq, future) heap
        self._seq = itertools.count()
        self._closed = False

    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def queued(self) -> int:
        return sum(1 for *_, f in self._waiters if not f.done())

    def close(self) -> None:
        """Refuse new requests from now on (draining); waiting ones keep their place."""
        self._closed = True

    def retry_after_s(self) -> float:
        # Scale the hint with the backlog: a full queue drains in roughly queued/max_inflight service times.
        return self.config.retry_after_s * max(1.0, self.queued / self.config.max_inflight)

    async def acquire(self, priority: int = 0, abort: asyncio.Event | None = None) -> float:
        """Wait for a slot; return the seconds waited. Raise Cancelled if `abort` is set while waiting."""
        if self._closed:
            self._metrics.rejected.labels("draining").inc()
            raise errors.Unavailable("the server is shutting down; retry on another replica")
        if self._inflight < self.config.max_inflight and not self.queued:
            self._take()
            self._metrics.queue_seconds.observe(0.0)
            return 0.0
        if self.queued >= self.config.max_queued:
            self._metrics.rejected.labels("queue_full").inc()
            raise errors.ResourceExhausted(
                f"admission queue is full ({self.config.max_queued} waiting, {self._inflight} running)",
                retry_after_s=self.retry_after_s(),
            )
        start = time.monotonic()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (-priority, next(self._seq), fut))
        self._metrics.queue_depth.set(self.queued)
        abort_wait = asyncio.ensure_future(abort.wait()) if abort is not None else None
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
            raise
        finally:
            if abort_wait is not None:
                abort_wait.cancel()
            self._metrics.queue_depth.set(self.queued)
        waited = time.monotonic() - start
        self._metrics.queue_seconds.observe(waited)
        return waited

    def release(self) -> None:
        self._inflight -= 1
        while self._waiters:
            *_, fut = heapq.heappop(self._waiters)
            if not fut.done():
                self._take()
                fut.set_result(None)
                break
        self._metrics.inflight.set(self._inflight)

    def _take(self) -> None:
        self._inflight += 1
        self._metrics.inflight.set(self._inflight)
