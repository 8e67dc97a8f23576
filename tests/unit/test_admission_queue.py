"""The admission queue on its own: slots, priority order, queue full, hand-over on release, cancellation, draining."""

from __future__ import annotations

import asyncio

import pytest

from trt_gateway import errors
from trt_gateway.config import AdmissionConfig
from trt_gateway.server.admission import Admission
from trt_gateway.server.metrics import Metrics


def make(max_inflight: int = 1, max_queued: int = 10, retry_after_s: float = 1.0) -> tuple[Admission, Metrics]:
    metrics = Metrics()
    config = AdmissionConfig(max_inflight=max_inflight, max_queued=max_queued, retry_after_s=retry_after_s)
    return Admission(config, metrics), metrics


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_free_slots_are_taken_at_once() -> None:
    adm, metrics = make(max_inflight=2)
    assert await adm.acquire() == 0.0
    assert await adm.acquire() == 0.0
    assert adm.inflight == 2 and adm.queued == 0
    assert metrics.registry.get_sample_value("trt_gateway_inflight_requests") == 2
    adm.release()
    adm.release()
    assert adm.inflight == 0


async def test_queue_full_raises_with_retry_hint_scaled_by_backlog() -> None:
    adm, metrics = make(max_inflight=1, max_queued=2, retry_after_s=0.5)
    await adm.acquire()
    waiters = [asyncio.ensure_future(adm.acquire()) for _ in range(2)]
    await settle()
    assert adm.queued == 2
    with pytest.raises(errors.ResourceExhausted) as err:
        await adm.acquire()
    assert err.value.retry_after_s == pytest.approx(0.5 * 2)  # two queued per running slot
    assert "2 waiting" in err.value.message
    assert metrics.registry.get_sample_value("trt_gateway_rejected_total", {"reason": "queue_full"}) == 1
    assert metrics.registry.get_sample_value("trt_gateway_queue_depth") == 2
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert adm.queued == 0
    assert metrics.registry.get_sample_value("trt_gateway_queue_depth") == 0


async def test_max_queued_zero_refuses_when_busy() -> None:
    adm, _ = make(max_inflight=1, max_queued=0)
    await adm.acquire()
    with pytest.raises(errors.ResourceExhausted):
        await adm.acquire()
    adm.release()
    assert await adm.acquire() == 0.0


async def test_release_hands_the_slot_over_in_priority_then_fifo_order() -> None:
    adm, _ = make(max_inflight=1)
    await adm.acquire()
    order: list[str] = []

    async def wait(name: str, priority: int) -> None:
        waited = await adm.acquire(priority)
        assert waited > 0
        order.append(name)

    tasks = []
    for name, priority in (("low", 0), ("low-b", 0), ("high", 10), ("neg", -3), ("high-b", 10), ("mid", 5)):
        tasks.append(asyncio.ensure_future(wait(name, priority)))
        await settle()
    assert adm.queued == 6
    await asyncio.sleep(0.01)
    for expected in range(1, 7):
        adm.release()  # the holder finishes; exactly one waiter gets its slot
        await settle()
        assert len(order) == expected and adm.inflight == 1
    assert order == ["high", "high-b", "mid", "low", "low-b", "neg"]
    adm.release()
    assert adm.inflight == 0
    await asyncio.gather(*tasks)


async def test_cancelled_waiter_gives_up_its_place() -> None:
    adm, _ = make(max_inflight=1)
    await adm.acquire()
    a = asyncio.ensure_future(adm.acquire())
    b = asyncio.ensure_future(adm.acquire())
    await settle()
    a.cancel()
    await settle()
    assert a.cancelled() and adm.queued == 1
    adm.release()
    await settle()
    assert b.done() and adm.inflight == 1  # the slot went to b, not to the cancelled a
    adm.release()
    assert adm.inflight == 0


async def test_cancel_just_after_the_slot_was_handed_over_passes_it_on() -> None:
    adm, _ = make(max_inflight=1)
    await adm.acquire()
    a = asyncio.ensure_future(adm.acquire())
    b = asyncio.ensure_future(adm.acquire())
    await settle()
    adm.release()  # a's future is resolved, but a has not run yet...
    a.cancel()  # ...and is cancelled before it does
    await settle()
    assert a.cancelled()
    assert b.done() and not b.cancelled()  # the slot was passed on, not leaked
    assert adm.inflight == 1 and adm.queued == 0
    adm.release()
    assert adm.inflight == 0


async def test_abort_event_while_waiting_raises_cancelled() -> None:
    adm, _ = make(max_inflight=1)
    await adm.acquire()
    abort = asyncio.Event()
    a = asyncio.ensure_future(adm.acquire(0, abort))
    b = asyncio.ensure_future(adm.acquire(0, asyncio.Event()))
    await settle()
    abort.set()
    with pytest.raises(errors.Cancelled):
        await a
    assert adm.queued == 1
    adm.release()
    assert await b > 0
    assert adm.inflight == 1


async def test_abort_event_already_set_while_slot_free_is_admitted() -> None:
    adm, _ = make(max_inflight=1)
    abort = asyncio.Event()
    abort.set()
    assert await adm.acquire(0, abort) == 0.0  # nothing to wait for: the caller sees the abort in the executor


async def test_close_refuses_new_but_serves_queued() -> None:
    adm, metrics = make(max_inflight=1)
    await adm.acquire()
    queued = asyncio.ensure_future(adm.acquire())
    await settle()
    adm.close()
    with pytest.raises(errors.Unavailable):
        await adm.acquire()
    assert metrics.registry.get_sample_value("trt_gateway_rejected_total", {"reason": "draining"}) == 1
    adm.release()
    assert await queued >= 0
    assert adm.inflight == 1


async def test_queue_time_is_observed() -> None:
    adm, metrics = make(max_inflight=1)
    await adm.acquire()
    waiter = asyncio.ensure_future(adm.acquire())
    await asyncio.sleep(0.02)
    adm.release()
    waited = await waiter
    assert waited >= 0.015
    assert metrics.registry.get_sample_value("trt_gateway_queue_time_seconds_count") == 2
    assert metrics.registry.get_sample_value("trt_gateway_queue_time_seconds_sum") == pytest.approx(waited)
