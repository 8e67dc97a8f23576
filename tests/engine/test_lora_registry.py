"""The adapter registry: slot LRU and pinning, the CPU cache bound, single-flight loads, the unload policy, and the
same rules seen through LLMEngine (prefix cache keyed by adapter, unload refused while a request holds it)."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time

import pytest
from engine_helpers import make_engine, make_request, run_until_done
from test_lora_adapter import module_shapes, write_adapter

from trt_gateway import errors
from trt_gateway.engine.lora import registry as registry_module
from trt_gateway.engine.lora.registry import LoraRegistry
from trt_gateway.types import Residency


class Slots:
    """Records slot writes instead of touching tensors."""

    def __init__(self) -> None:
        self.writes: list[tuple[int, int]] = []  # (slot, rank)

    def __call__(self, slot, weights) -> None:
        self.writes.append((slot, weights.rank))


def make_registry(tmp_path, names, max_loras=2, max_cpu_loras=4):
    slots = Slots()
    reg = LoraRegistry(max_loras=max_loras, max_cpu_loras=max_cpu_loras, max_rank=8, modules=module_shapes(),
                       write_slot=slots)
    for i, name in enumerate(names):
        reg.register(name, str(write_adapter(tmp_path / name, r=1 + i % 8, seed=i)))
    return reg, slots


def residency(reg) -> dict[str, tuple[Residency, int]]:
    return {a.name: (a.residency, a.slot) for a in reg.list()}


def test_slots_are_an_lru_of_unpinned_adapters(tmp_path):
    reg, slots = make_registry(tmp_path, "abc")
    a, b, c = (reg.acquire(n) for n in "abc")
    assert (reg.take_slot(a), reg.take_slot(b)) == (1, 2)
    reg.release_slot(a)
    reg.release_slot(b)
    assert reg.take_slot(a) == 1  # already resident: no write, and a becomes most recently used
    reg.release_slot(a)
    assert reg.take_slot(c) == 2  # evicts b, the least recently used
    assert slots.writes == [(1, 1), (2, 2), (2, 3)]
    assert residency(reg) == {"a": (Residency.GPU, 1), "b": (Residency.CPU, -1), "c": (Residency.GPU, 2)}


def test_a_running_adapter_keeps_its_slot(tmp_path):
    reg, _ = make_registry(tmp_path, "abc")
    a, b, c = (reg.acquire(n) for n in "abc")
    reg.take_slot(a)
    reg.take_slot(b)
    reg.take_slot(b)  # two running sequences of b
    assert not reg.can_take_slot(c)
    with pytest.raises(RuntimeError):
        reg.take_slot(c)
    reg.release_slot(b)
    assert not reg.can_take_slot(c)  # b still has one running sequence
    reg.release_slot(b)
    assert reg.can_take_slot(c) and reg.take_slot(c) == 2
    assert residency(reg)["a"] == (Residency.GPU, 1)  # a, pinned throughout, never moved


def test_cpu_cache_is_bounded_and_lru(tmp_path):
    reg, _ = make_registry(tmp_path, "abcd", max_loras=1, max_cpu_loras=2)
    assert [r for r, _ in residency(reg).values()] == [Residency.DISK, Residency.DISK, Residency.CPU, Residency.CPU]
    loads = reg.num_loads
    reg.acquire("a").release()  # read again from disk; evicts c, now the least recently used
    assert reg.num_loads == loads + 1
    assert {n: r for n, (r, _) in residency(reg).items()} == {
        "a": Residency.CPU, "b": Residency.DISK, "c": Residency.DISK, "d": Residency.CPU}
    refs = [reg.acquire(n) for n in "abc"]  # pinned adapters may exceed the bound while held (d is dropped)...
    assert {n: r for n, (r, _) in residency(reg).items()} == {
        "a": Residency.CPU, "b": Residency.CPU, "c": Residency.CPU, "d": Residency.DISK}
    for ref in refs:
        ref.release()
    assert sum(r is not Residency.DISK for r, _ in residency(reg).values()) == 2  # ...and are trimmed after


def test_concurrent_first_uses_load_once(tmp_path, monkeypatch):
    reg, _ = make_registry(tmp_path, "ab", max_loras=1, max_cpu_loras=1)  # a is on disk only
    assert residency(reg)["a"][0] is Residency.DISK
    real, calls = registry_module.load_weights, []

    def slow_load(*args):
        calls.append(threading.get_ident())
        time.sleep(0.2)
        return real(*args)

    monkeypatch.setattr(registry_module, "load_weights", slow_load)
    barrier = threading.Barrier(8)
    refs = []

    def use():
        barrier.wait()
        refs.append(reg.acquire("a"))

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(refs) == 8
    assert reg.info("a").active_requests == 8 and reg.info("a").residency is Residency.CPU
    for ref in refs:
        ref.release()
        ref.release()  # idempotent
    assert reg.info("a").active_requests == 0


async def test_concurrent_first_uses_from_asyncio_load_once(tmp_path, monkeypatch):
    reg, _ = make_registry(tmp_path, "ab", max_loras=1, max_cpu_loras=1)
    real, calls = registry_module.load_weights, []
    monkeypatch.setattr(registry_module, "load_weights", lambda *a: (calls.append(1), time.sleep(0.1), real(*a))[2])
    refs = await asyncio.gather(*(asyncio.to_thread(reg.acquire, "a") for _ in range(6)))
    assert len(calls) == 1 and reg.info("a").active_requests == 6
    for ref in refs:
        ref.release()


def test_a_failed_reload_fails_every_waiter_and_pins_nothing(tmp_path):
    reg, _ = make_registry(tmp_path, "ab", max_loras=1, max_cpu_loras=1)
    shutil.rmtree(tmp_path / "a")
    results = []

    def use():
        try:
            reg.acquire("a")
        except errors.GatewayError as exc:
            results.append(exc)

    threads = [threading.Thread(target=use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(isinstance(e, errors.FailedPrecondition) for e in results)
    assert reg.info("a").active_requests == 0


def test_unload_in_use_is_refused_then_allowed(tmp_path):
    reg, _ = make_registry(tmp_path, "ab")
    ref = reg.acquire("a")
    assert reg.take_slot(ref) == 1
    with pytest.raises(errors.FailedPrecondition, match="in use by 1 request"):
        reg.unregister("a")
    reg.release_slot(ref)
    ref.release()
    reg.unregister("a")
    assert [a.name for a in reg.list()] == ["b"]
    assert reg.take_slot(reg.acquire("b")) == 1  # the freed slot is reused
    salt = reg.acquire("b").cache_salt
    with pytest.raises(errors.NotFound):
        reg.acquire("a")
    reg.register("a", str(tmp_path / "a"))
    assert reg.acquire("a").cache_salt not in (salt, ref.cache_salt)  # a re-load never reuses old prefix-cache KV


def test_concurrent_registration_of_one_name_loads_once(tmp_path, monkeypatch):
    reg, _ = make_registry(tmp_path, "")
    path = str(write_adapter(tmp_path / "x"))
    real, calls = registry_module.load_weights, []
    monkeypatch.setattr(registry_module, "load_weights", lambda *a: (calls.append(1), time.sleep(0.1), real(*a))[2])
    infos = []
    threads = [threading.Thread(target=lambda: infos.append(reg.register("x", path))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(infos) == 4 and len({i.name for i in infos}) == 1


# -- through the engine --------------------------------------------------------------------------------------------

TINY = module_shapes(hidden=64, inter=128, layers=2)  # engine_helpers' "llama" variant


@pytest.fixture
def engine(llama, tmp_path):
    engine = make_engine(llama.path, max_loras=2, max_lora_rank=8)
    for i, name in enumerate(["alpha", "beta"]):
        engine.lora.register(name, str(write_adapter(tmp_path / name, r=4, seed=i, shapes=TINY,
                                                     targets=("q_proj", "v_proj", "down_proj"))))
    return engine


def test_prefix_cache_is_keyed_by_adapter(engine):
    prompt = list(range(3, 20))  # 17 tokens: 4 full blocks of 4
    engine.add_request(make_request("a", max_tokens=2, adapter="alpha"), prompt)
    run_until_done(engine)
    engine.add_request(make_request("b", max_tokens=2, adapter="beta"), prompt)
    engine.add_request(make_request("none", max_tokens=2), prompt)
    engine.add_request(make_request("c", max_tokens=2, adapter="alpha"), prompt)
    outs = run_until_done(engine)
    assert outs["b"][-1].usage.cached_tokens == 0 and outs["none"][-1].usage.cached_tokens == 0
    assert outs["c"][-1].usage.cached_tokens == 16
    engine.lora.unregister("alpha")
    engine.lora.register("alpha", engine.lora.list()[0].path)  # same name, now beta's weights
    engine.add_request(make_request("d", max_tokens=2, adapter="alpha"), prompt)
    assert run_until_done(engine)["d"][-1].usage.cached_tokens == 0


def test_engine_refuses_unload_while_a_request_holds_the_adapter(engine):
    engine.add_request(make_request("a", max_tokens=4, adapter="alpha"), [5, 6, 7])
    with pytest.raises(errors.FailedPrecondition):
        engine.lora.unregister("alpha")  # waiting
    engine.step()
    assert engine.lora.info("alpha").residency is Residency.GPU
    with pytest.raises(errors.FailedPrecondition):
        engine.lora.unregister("alpha")  # running
    engine.abort("a")
    engine.step()
    engine.lora.unregister("alpha")
    with pytest.raises(errors.NotFound):
        engine.add_request(make_request("b", adapter="alpha"), [5, 6, 7])
    assert engine.lora.info("beta").active_requests == 0
