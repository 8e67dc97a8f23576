"""The stall watchdog of one stream: notices a client that stopped reading.

gRPC flow control bounds what a stream buffers: once the client stops reading, the servicer's write (its `yield`)
does not return. When one write stays blocked for `stall_s`, the watchdog calls `on_stall` (the servicer aborts the
request, so its KV blocks are freed). It must cost next to nothing per chunk: a write only stamps the time it began,
and the one timer, when it fires, re-arms itself for the write then in progress, instead of one timer per chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class StallWatchdog:
    def __init__(self, stall_s: float, on_stall: Callable[[], None]) -> None:
        self.stall_s = stall_s
        self.on_stall = on_stall
        self._loop = asyncio.get_running_loop()
        self._since: float | None = None  # when the write in progress began (loop time); None between writes
        self._timer: asyncio.TimerHandle | None = None

    def writing(self) -> None:
        """A write begins."""
        self._since = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_at(self._since + self.stall_s, self._check)

    def written(self) -> None:
        """The write returned."""
        self._since = None

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        if self._since is None:
            return  # no write in progress: the next one arms the timer again
        due = self._since + self.stall_s
        if self._loop.time() + 1e-3 >= due:  # (call_at may fire a hair early)
            self._since = None  # once per blocked write, as a timer per write would
            self.on_stall()
        else:
            self._timer = self._loop.call_at(due, self._check)
