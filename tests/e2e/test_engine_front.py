"""The native engine's async front on the committed demo model: one adapter pin per request, released on every way
out (finished, closed early, cancelled while the pin was being taken, refused as a duplicate), and stats()."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from trt_gateway import errors
from trt_gateway.engine.async_engine import AsyncEngine
from trt_gateway.engine.engine_config import EngineConfig
from trt_gateway.types import GenerateRequest, Prompt, SamplingParams, StoppingCriteria

DEMO = Path(__file__).resolve().parents[2] / "trt_gateway" / "assets" / "demo"


@pytest.fixture
async def front() -> AsyncIterator[AsyncEngine]:
    config = EngineConfig(model=str(DEMO / "target"), device="cpu", max_loras=1, max_cpu_loras=2, max_lora_rank=16)
    front = await AsyncEngine.start(config)
    await front.load_adapter("uppercase", str(DEMO / "adapters" / "uppercase"))
    try:
        yield front
    finally:
        await front.shutdown()


def request(rid: str, max_tokens: int = 4, adapter: str | None = "uppercase") -> GenerateRequest:
    return GenerateRequest(
        request_id=rid,
        model="demo",
        prompt=Prompt(text="hello"),
        sampling=SamplingParams(temperature=0.0),
        stopping=StoppingCriteria(max_tokens=max_tokens, ignore_eos=True),
        adapter=adapter,
    )


def active(front: AsyncEngine) -> int:
    return next(a.active_requests for a in front.list_adapters() if a.name == "uppercase")


async def drain(front: AsyncEngine, r: GenerateRequest) -> int:
    return sum([len(d.token_ids) async for d in front.generate(r)])


async def until(predicate, timeout: float = 10.0) -> None:  # noqa: ANN001
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_one_pin_per_request_released_when_it_finishes(front: AsyncEngine) -> None:
    stream = front.generate(request("a", max_tokens=8))
    first = await anext(stream)
    assert first.token_ids and active(front) == 1  # one reference, however many layers handled the request
    rest = [d async for d in stream]
    assert rest[-1].finish is not None
    assert active(front) == 0


async def test_closing_early_releases_the_pin_and_the_blocks(front: AsyncEngine) -> None:
    stream = front.generate(request("b", max_tokens=64))
    await anext(stream)
    await stream.aclose()
    await until(lambda: active(front) == 0)
    await until(lambda: (s := front.stats()) is not None and s.load.kv_cache_usage == 0.0)
    stats = front.stats()
    assert stats is not None and stats.load.block_size > 0 and stats.load.max_loras == 1
    assert stats.load.num_running == stats.load.num_waiting == 0 and stats.speculation is None


async def test_cancelled_while_pinning_releases_the_pin(front: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = front.engine.lora  # type: ignore[union-attr]
    gate, entered = threading.Event(), threading.Event()
    real_acquire = registry.acquire

    def slow_acquire(name: str):  # noqa: ANN202 - an evicted adapter being read from disk
        ref = real_acquire(name)
        entered.set()
        gate.wait(10)
        return ref

    monkeypatch.setattr(registry, "acquire", slow_acquire)
    task = asyncio.ensure_future(drain(front, request("c")))
    await asyncio.to_thread(entered.wait, 10)
    assert active(front) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()  # the read finishes after its caller has gone: its pin must not leak
    await until(lambda: active(front) == 0)


async def test_duplicate_id_is_refused_without_leaking_a_pin(front: AsyncEngine) -> None:
    stream = front.generate(request("d", max_tokens=64))
    await anext(stream)
    with pytest.raises(errors.AlreadyExists, match="request_id 'd' is already running"):
        await drain(front, request("d"))
    assert active(front) == 1
    await stream.aclose()
    await until(lambda: active(front) == 0)
    assert await drain(front, request("d", max_tokens=3)) == 3  # the id is free again


async def test_bad_input_fails_before_anything_is_pinned(front: AsyncEngine) -> None:
    bad = GenerateRequest(
        request_id="e", model="demo", prompt=Prompt(token_ids=(10**9,)), adapter="uppercase"
    )
    with pytest.raises(errors.InvalidArgument) as err:
        await drain(front, bad)
    assert err.value.field == "token_ids" and active(front) == 0
