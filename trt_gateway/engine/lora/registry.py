"""The adapter registry: names -> adapters, an LRU of engine slots over an LRU of host-memory copies.

Residency of a registered adapter (what ListAdapters shows):
    GPU   in an engine slot (1..max_loras), ready for a batch; "GPU" even when the engine runs on the CPU
    CPU   its weights are in host memory (at most max_cpu_loras of them, slot residents included)
    DISK  registered only; its files are read again on its next use
Two counts pin an adapter:
    refs     requests holding it, waiting or running. Its host copy is never dropped, and it cannot be unloaded.
    running  scheduled sequences using its slot. Its slot is never given to another adapter.
Waiting requests do not pin slots: if they did, a queue head waiting for a slot could wait forever on slots pinned
by requests queued behind it.

Unloading an adapter with refs > 0 is refused with FAILED_PRECONDITION (not waited for): a generation can last
minutes and new requests could keep the count above zero forever, so a waiting RPC would hang without a bound; a
refusal is immediate, says how many requests hold the adapter, and the caller decides when to retry.

Threads: the event loop registers, unregisters and lists; worker threads and the engine thread `acquire` (which may
read from disk); only the engine thread takes and releases slots and writes slot tensors. One lock guards the
bookkeeping; file reads and slot writes happen outside it. Concurrent first uses of an adapter read it once (single
flight): the first caller loads, the others wait for its result.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from trt_gateway import errors
from trt_gateway.engine.lora.adapter import AdapterConfig, LoraWeights, load_weights, read_config
from trt_gateway.types import AdapterInfo, Residency

log = logging.getLogger(__name__)
_load_ids = itertools.count(1)


@dataclass(eq=False)
class _Flight:
    """One in-progress read of an adapter's files, shared by every caller that needs it meanwhile."""

    done: threading.Event = field(default_factory=threading.Event)
    weights: LoraWeights | None = None
    error: errors.GatewayError | None = None


@dataclass(eq=False)
class _Entry:
    name: str
    path: str
    config: AdapterConfig
    cache_salt: str  # unique per registration: a re-registered name never hits the old weights' prefix cache
    weights: LoraWeights | None = None
    flight: _Flight | None = None
    slot: int = 0  # 0: not in a slot
    refs: int = 0
    running: int = 0


class LoraRef:
    """One request's hold on an adapter. `release()` is idempotent."""

    def __init__(self, registry: LoraRegistry, entry: _Entry) -> None:
        self._registry, self._entry, self._released = registry, entry, False

    @property
    def name(self) -> str:
        return self._entry.name

    @property
    def rank(self) -> int:
        return self._entry.config.rank

    @property
    def cache_salt(self) -> str:
        return self._entry.cache_salt

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._registry._release(self._entry)


class LoraRegistry:
    def __init__(
        self,
        *,
        max_loras: int,
        max_cpu_loras: int,
        max_rank: int,
        modules: Mapping[str, tuple[int, int]],
        write_slot: Callable[[int, LoraWeights], None],
    ) -> None:
        if not 1 <= max_loras <= max_cpu_loras:
            raise ValueError(f"need 1 <= max_loras ({max_loras}) <= max_cpu_loras ({max_cpu_loras})")
        self.max_loras, self.max_cpu_loras, self.max_rank = max_loras, max_cpu_loras, max_rank
        self._modules = dict(modules)
        self._write_slot = write_slot
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._registering: dict[str, tuple[str, _Flight]] = {}  # name -> (path, flight) while its first read runs
        self._cpu: OrderedDict[str, None] = OrderedDict()  # names with weights in host memory, least recent first
        self._slots: OrderedDict[int, _Entry] = OrderedDict()  # occupied slots, least recently used first
        self._free_slots = list(range(max_loras, 0, -1))  # pop() gives the lowest free slot
        self.num_loads = 0  # file reads (tests check single flight with it)

    # -- lifecycle (LoadAdapter / UnloadAdapter / ListAdapters) ---------------------------------------------------
    def register(self, name: str, path: str) -> AdapterInfo:
        """Validate and read an adapter into host memory. Same name and path again: no-op. Blocks on file reads.

        The path is resolved here, once; every read of the files, now and after an eviction, walks that resolved
        path without following symlinks (adapter_files.py), so what was confined at load is what is read later."""
        path = os.path.realpath(path)
        with self._lock:
            entry = self._entries.get(name)
            pending = self._registering.get(name)
            if entry is not None or pending is not None:
                known = entry.path if entry is not None else pending[0]  # type: ignore[index]
                if known != path:
                    raise errors.AlreadyExists(f"adapter {name!r} is already loaded from {known}", field="name")
                if entry is not None:
                    return self._info(entry)
            leader = pending is None
            if leader:
                pending = self._registering[name] = (path, _Flight())
        flight = pending[1]  # type: ignore[index]
        if not leader:
            return self._wait(flight, name)
        try:
            config = read_config(Path(path), self.max_rank)
            weights = load_weights(Path(path), config, self._modules)
        except errors.GatewayError as exc:
            with self._lock:
                del self._registering[name]
            flight.error = exc
            flight.done.set()
            raise
        with self._lock:
            del self._registering[name]
            entry = _Entry(name, path, config, cache_salt=f"{name}#{next(_load_ids)}")
            self._entries[name] = entry
            self._keep_in_cpu(entry, weights)
            info = self._info(entry)
        flight.done.set()
        log.info("adapter %s loaded from %s (rank %d, %s)", name, path, config.rank, ",".join(config.target_modules))
        return info

    def _wait(self, flight: _Flight, name: str) -> AdapterInfo:
        flight.done.wait()
        if flight.error is not None:
            raise flight.error
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                raise errors.NotFound(f"adapter {name!r} was unloaded while loading", field="name")
            return self._info(entry)

    def unregister(self, name: str) -> None:
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                raise errors.NotFound(f"adapter {name!r} is not loaded", field="name")
            if entry.refs:
                raise errors.FailedPrecondition(
                    f"adapter {name!r} is in use by {entry.refs} request(s); retry when they have finished",
                    field="name",
                )
            del self._entries[name]
            self._cpu.pop(name, None)
            if entry.slot:
                del self._slots[entry.slot]
                self._free_slots.append(entry.slot)
                entry.slot = 0
        log.info("adapter %s unloaded", name)

    def list(self) -> list[AdapterInfo]:
        with self._lock:
            return [self._info(e) for e in sorted(self._entries.values(), key=lambda e: e.name)]

    def info(self, name: str) -> AdapterInfo:
        with self._lock:
            return self._info(self._get(name))

    # -- requests -------------------------------------------------------------------------------------------------
    def acquire(self, name: str) -> LoraRef:
        """Pin the adapter for one request, reading its files if only DISK-resident. Raises NotFound."""
        with self._lock:
            entry = self._get(name)
            entry.refs += 1
            if entry.weights is not None:
                self._cpu.move_to_end(name)
                return LoraRef(self, entry)
            flight, leader = entry.flight, entry.flight is None
            if flight is None:
                flight = entry.flight = _Flight()
        if leader:
            self._reload(entry, flight)
        flight.done.wait()
        if flight.error is not None:
            self._release(entry)
            raise flight.error
        return LoraRef(self, entry)

    def _reload(self, entry: _Entry, flight: _Flight) -> None:
        try:
            weights = load_weights(Path(entry.path), entry.config, self._modules)
        except errors.GatewayError as exc:
            # The detail names server paths: it goes to the log, not to a client that may not see paths (auth.py).
            log.warning("adapter %s could not be read again: %s", entry.name, exc.message)
            flight.error = errors.FailedPrecondition(
                f"adapter {entry.name!r} could not be read again from disk (its files changed since it was loaded; "
                "the server log says how): unload and load it again",
                field="adapter",
            )
        with self._lock:
            entry.flight = None
            if flight.error is None:
                self._keep_in_cpu(entry, weights)
        flight.done.set()

    def _release(self, entry: _Entry) -> None:
        with self._lock:
            entry.refs -= 1
            self._trim_cpu()

    # -- slots (engine thread only) -------------------------------------------------------------------------------
    def can_take_slot(self, ref: LoraRef) -> bool:
        with self._lock:
            return bool(ref._entry.slot or self._free_slots or self._victim() is not None)

    def take_slot(self, ref: LoraRef) -> int:
        """A slot holding the adapter for one more running sequence; evicts the LRU unpinned slot if needed."""
        entry = ref._entry
        with self._lock:
            entry.running += 1
            if entry.slot:
                self._slots.move_to_end(entry.slot)
                return entry.slot
            if self._free_slots:
                slot = self._free_slots.pop()
            else:
                victim = self._victim()
                if victim is None:
                    entry.running -= 1
                    raise RuntimeError("no LoRA slot is free: call can_take_slot first")
                slot, victim.slot = victim.slot, 0
                del self._slots[slot]
            entry.slot = slot
            self._slots[slot] = entry
            weights = entry.weights
            self._trim_cpu()
        assert weights is not None  # refs > 0 keeps the host copy
        self._write_slot(slot, weights)
        return slot

    def release_slot(self, ref: LoraRef) -> None:
        with self._lock:
            ref._entry.running -= 1

    # -- internals (lock held) ------------------------------------------------------------------------------------
    def _get(self, name: str) -> _Entry:
        entry = self._entries.get(name)
        if entry is None:
            raise errors.NotFound(f"adapter {name!r} is not loaded (LoadAdapter it first)", field="adapter")
        return entry

    def _victim(self) -> _Entry | None:
        return next((e for e in self._slots.values() if e.running == 0), None)

    def _keep_in_cpu(self, entry: _Entry, weights: LoraWeights) -> None:
        entry.weights = weights
        self._cpu[entry.name] = None
        self._cpu.move_to_end(entry.name)
        self.num_loads += 1
        self._trim_cpu()

    def _trim_cpu(self) -> None:
        """Drop least recently used host copies beyond max_cpu_loras; never one that is pinned or in a slot.

        The bound can be exceeded only while more distinct adapters than max_cpu_loras are held by requests; it is
        restored as they release them.
        """
        excess = len(self._cpu) - self.max_cpu_loras
        for name in list(self._cpu):
            if excess <= 0:
                return
            entry = self._entries[name]
            if entry.refs == 0 and not entry.slot:
                entry.weights = None
                del self._cpu[name]
                excess -= 1

    def _info(self, entry: _Entry) -> AdapterInfo:
        residency = Residency.GPU if entry.slot else Residency.CPU if entry.weights is not None else Residency.DISK
        return AdapterInfo(
            name=entry.name,
            path=entry.path,
            model="",
            rank=entry.config.rank,
            alpha=entry.config.alpha,
            target_modules=entry.config.target_modules,
            residency=residency,
            slot=entry.slot if entry.slot else -1,
            active_requests=entry.refs,
        )
