"""The compile scheduler (engine/compile_lanes.py) with real threads and jobs that block until released, so each
ordering is forced by events: which job ran, in which order, and what was dropped. The real-engine side (xgrammar
compiles through a gateway) is tests/e2e/test_bounded_work.py."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest
from gateway_testing import poll

from trt_gateway import errors
from trt_gateway.config import ServerConfig
from trt_gateway.engine import compile_lanes
from trt_gateway.engine.compile_lanes import SMALL_CHARS, CompileLanes, tenant
from trt_gateway.server.auth import Keys

BIG = "x" * (SMALL_CHARS + 1)


class Jobs:
    """Jobs that record that they ran and then block until `release()`."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self._gate = threading.Event()

    def job(self, name: str) -> Callable[[], str]:
        def run() -> str:
            self.ran.append(name)
            self._gate.wait(30)
            return name

        return run

    def release(self) -> None:
        self._gate.set()


async def test_small_constraints_pass_queued_big_ones_and_tenants_take_turns() -> None:
    lanes, jobs = CompileLanes(1), Jobs()
    first = asyncio.ensure_future(lanes.run(BIG + "a1", "k0:", jobs.job("a1")))
    assert await poll(lambda: jobs.ran == ["a1"])
    queued = [asyncio.ensure_future(lanes.run(BIG + n, t, jobs.job(n))) for n, t in
              [("a2", "k0:"), ("a3", "k0:"), ("b1", "k1:")]]
    await asyncio.sleep(0)
    small = asyncio.ensure_future(lanes.run("small", "k0:", jobs.job("small")))
    assert await poll(lambda: "small" in jobs.ran)  # its own lane: not behind a1, a2, a3, b1
    jobs.release()
    assert await asyncio.gather(first, *queued, small) == ["a1", "a2", "a3", "b1", "small"]
    assert jobs.ran == ["a1", "small", "a2", "b1", "a3"]  # b1 before a3: k1's turn came after k0's a2


async def test_one_compile_per_constraint_and_a_known_one_is_small() -> None:
    lanes, jobs = CompileLanes(1), Jobs()
    shared = [asyncio.ensure_future(lanes.run(BIG, "", jobs.job(f"same{i}"))) for i in range(3)]
    jobs.release()
    assert await asyncio.gather(*shared) == ["same0"] * 3 and jobs.ran == ["same0"]
    blocked = Jobs()
    holder = asyncio.ensure_future(lanes.run(BIG + "other", "", blocked.job("other")))  # holds the big lane
    assert await poll(lambda: blocked.ran == ["other"])
    assert await lanes.run(BIG, "", jobs.job("again")) == "again"  # compiled before: the small lane, not queued
    blocked.release()
    await holder


async def test_the_record_of_compiled_constraints_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compile_lanes, "REMEMBERED", 2)
    lanes, jobs = CompileLanes(1), Jobs()
    jobs.release()
    for name in ("a", "b", "c"):
        await lanes.run(BIG + name, "", jobs.job(name))
    assert len(lanes._compiled) == 2  # "a", the least recently used, forgotten (it would compile in the big lane)


async def test_a_compile_runs_while_anyone_waits_and_is_dropped_when_nobody_does() -> None:
    lanes, jobs = CompileLanes(1), Jobs()
    holder = asyncio.ensure_future(lanes.run(BIG + "holder", "", jobs.job("holder")))
    assert await poll(lambda: jobs.ran == ["holder"])
    kept = [asyncio.ensure_future(lanes.run(BIG + "kept", "", jobs.job("kept"))) for _ in range(2)]
    gone = asyncio.ensure_future(lanes.run(BIG + "gone", "", jobs.job("gone")))
    await asyncio.sleep(0)
    kept[0].cancel()  # one of two waiters leaves: the compile still runs for the other
    gone.cancel()  # its only waiter leaves: dropped
    jobs.release()
    assert await kept[1] == "kept" and await holder == "holder"
    await asyncio.sleep(0.05)
    assert jobs.ran == ["holder", "kept"]


async def test_shutdown_fails_the_queued_compiles() -> None:
    lanes, jobs = CompileLanes(1), Jobs()
    running = asyncio.ensure_future(lanes.run(BIG + "1", "", jobs.job("1")))
    assert await poll(lambda: jobs.ran == ["1"])
    queued = asyncio.ensure_future(lanes.run(BIG + "2", "", jobs.job("2")))
    await asyncio.sleep(0)
    lanes.shutdown(errors.Unavailable("the engine is shutting down"))
    with pytest.raises(errors.Unavailable):
        await queued
    jobs.release()
    assert await running == "1" and jobs.ran == ["1"]


def test_the_tenant_is_the_namespace_the_gateway_gives_a_keys_request_ids() -> None:
    keys = Keys(ServerConfig(api_keys=("alice", "bob")))
    for key, expected in [("alice", "k0:"), ("bob", "k1:")]:
        caller = keys.caller([("authorization", f"Bearer {key}")])
        assert tenant(caller.owned_id("k7:x")) == expected  # a client's own id cannot pose as another key
    assert tenant("k7:x") == "k7:" and tenant("plain-id") == "" and tenant("kx:1") == ""
