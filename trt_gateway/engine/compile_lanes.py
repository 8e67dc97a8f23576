"""Which grammar compile runs next, so that nobody's small constraint waits behind somebody else's huge one.

A compile's cost grows with its constraint (6,000 choices: seconds; a short regex or a tool's schema: milliseconds)
and a started compile cannot be interrupted, so one shared FIFO let a burst of huge compiles hold every thread while
an unrelated small request waited out its whole budget. The policy (docs/guided.md, "Cost and bounds"):

- **Two lanes.** A constraint of at most `SMALL_CHARS` characters, or one compiled before (xgrammar's cache answers it
  in microseconds), runs in the small lane: one thread of its own that big compiles never occupy. Everything else
  runs in the big lane (`guided_compile_threads` threads). Both lanes' threads run at the same lowered CPU priority
  (background.py): a small compile shares the cores with the big ones running, which costs it little (measured: a
  4-way choice among eight running 6,000-choice compiles on 2 cores took 0.2 s), while pushing the big lane lower
  still let the gateway's neighbours on a shared machine starve it.
- **Tenants take turns** within each lane: the next compile to start is the oldest of the tenant after the one served
  last, so a client sending many compiles delays its own, not everyone's. A tenant is an API key: the gateway runs a
  key's requests under ids `k<index>:<id>` (server/auth.py); without keys every request is one tenant and each lane
  is first come, first served.
- **One compile per constraint.** Requests with the same constraint while it is queued or running share that compile;
  once it has finished, the same constraint is a cache hit in the small lane. xgrammar's cache is bounded
  (`guided_cache_bytes`) and so is this record of what compiled (`REMEMBERED`, least recently used out): a big
  constraint xgrammar evicted meanwhile compiles again in the small lane, once, within the same size limits and budget.
- **Dropped when nobody waits.** A compile whose every request has gone (client away, budget spent) before it started
  never runs; one that started finishes into the cache.

All scheduling happens on the event loop (no locks); only the compiles themselves run in the lanes' threads.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from trt_gateway.engine import background

# The small lane's bound, in characters of the text xgrammar compiles. Measured on the demo model (8,192 tokens, a
# shared 2-core machine): 4,256 characters of choices compiled in 14 ms, a 60-field JSON schema (3,700 characters) in
# 8 ms, 6,000 choices of 20 letters (150,000 characters) in 2-5 s. A larger vocabulary costs more per character;
# the bound is a sixteenth of the largest constraint the server lets through (limits.max_guided_chars).
SMALL_CHARS = 4096
REMEMBERED = 65_536  # constraints remembered as compiled: 16-byte digests, a few MB at most
_TENANT = re.compile(r"k\d+:")  # the namespace auth.Caller.owned_id puts in front of a keyed request's id


def tenant(request_id: str) -> str:
    """The API key a request id belongs to, as its namespace ("k3:"), or "" when the gateway runs without keys."""
    found = _TENANT.match(request_id)
    return found.group() if found else ""


@dataclass(eq=False, slots=True)
class _Job:
    fn: Callable[[], Any]
    result: asyncio.Future[Any]
    tenant: str
    waiters: int = 0
    started: bool = False


class _Lane:
    """`threads` compiles at a time; the next is the oldest of the tenant whose turn it is."""

    def __init__(self, threads: int, name: str) -> None:
        self._pool = background.pool(threads, name)
        self._free = threads
        self._turns: dict[str, deque[_Job]] = {}  # tenants with queued compiles, in turn order (insertion order)

    def add(self, job: _Job) -> None:
        self._turns.setdefault(job.tenant, deque()).append(job)
        self._start_next()

    def _next(self) -> _Job | None:
        while self._turns:
            name = next(iter(self._turns))
            queue = self._turns.pop(name)
            job = queue.popleft()
            if queue:
                self._turns[name] = queue  # to the back of the line
            if not job.result.done():  # done before it started: dropped (nobody waits) or shut down
                return job
        return None

    def _start_next(self) -> None:
        while self._free and (job := self._next()) is not None:
            self._free -= 1
            job.started = True
            running = asyncio.get_running_loop().run_in_executor(self._pool, job.fn)
            running.add_done_callback(partial(self._finished, job))

    def _finished(self, job: _Job, running: asyncio.Future[Any]) -> None:
        self._free += 1
        if not job.result.done():
            if running.cancelled():
                job.result.cancel()
            elif (error := running.exception()) is not None:
                job.result.set_exception(error)
            else:
                job.result.set_result(running.result())
        self._start_next()

    def shutdown(self, error: BaseException) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for queue in self._turns.values():
            for job in queue:
                if not job.result.done():
                    job.result.set_exception(error)
        self._turns.clear()


class CompileLanes:
    def __init__(self, big_threads: int, name: str = "trt-gateway-grammar") -> None:
        self._small = _Lane(1, f"{name}-small")
        self._big = _Lane(big_threads, name)
        self._pending: dict[bytes, _Job] = {}  # constraints queued or compiling
        self._compiled: OrderedDict[bytes, None] = OrderedDict()  # constraints compiled lately, oldest first

    async def run(self, constraint: str, owner: str, fn: Callable[[], Any]) -> Any:
        """fn() (which compiles `constraint`, the exact text xgrammar is given, kind included) in its lane, or the
        result of the same constraint's compile already under way. Cancelling the caller stops its wait; when no
        caller waits any more, a compile that has not started is dropped."""
        key = hashlib.blake2b(constraint.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        job = self._pending.get(key)
        if job is None:
            job = _Job(fn, asyncio.get_running_loop().create_future(), owner)
            self._pending[key] = job
            job.result.add_done_callback(partial(self._settled, key, job))
            small = len(constraint) <= SMALL_CHARS or key in self._compiled
            if key in self._compiled:
                self._compiled.move_to_end(key)
            (self._small if small else self._big).add(job)
        job.waiters += 1
        try:
            return await asyncio.shield(job.result)
        finally:
            job.waiters -= 1
            if not job.waiters and not job.started and not job.result.done():
                del self._pending[key]  # now, not in _settled's callback: a request arriving meanwhile starts afresh
                job.result.cancel()

    def _settled(self, key: bytes, job: _Job, result: asyncio.Future[Any]) -> None:
        if self._pending.get(key) is job:
            del self._pending[key]
        if not result.cancelled() and result.exception() is None:
            self._compiled[key] = None
            if len(self._compiled) > REMEMBERED:
                self._compiled.popitem(last=False)

    def shutdown(self, error: BaseException) -> None:
        """On the event loop: compiles not started fail with `error`."""
        self._small.shutdown(error)
        self._big.shutdown(error)
