"""The vllm executor's adapters: the gateway's registry in front of vLLM's LoRA cache.

vLLM names an adapter per request with `LoRARequest(lora_name, lora_int_id, lora_path)` and caches adapter weights by
`lora_int_id`: `max_loras` in GPU slots, `max_cpu_loras` in an LRU cache in host memory. `AsyncLLM.add_lora` loads an
adapter into that cache ahead of use and `remove_lora(id)` drops it. The gateway's registry (shared with the trtllm
executor: path, adapter_config.json and rank checks, ids never reused, refcounts) stays the source of truth for
Load/Unload/List, because vLLM may evict an adapter from its cache and load it again from `lora_path` on next use:
- LoadAdapter validates the directory, then `add_lora` loads it now, so a bad adapter fails the RPC, not a request;
- UnloadAdapter refuses while requests use the adapter, then `remove_lora`;
- residency: GPU while a request uses it, CPU once `add_lora` loaded it (it may since have been evicted from the
  LRU cache; vLLM does not say), DISK when it has been registered only.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from trt_gateway import errors
from trt_gateway.executors.adapter_registry import Adapter, AdapterRegistry
from trt_gateway.types import AdapterInfo, Residency

log = logging.getLogger(__name__)


class VllmAdapters:
    def __init__(self, model: str, max_lora_rank: int, lora_request_cls: type) -> None:
        self.registry = AdapterRegistry(model, max_lora_rank)
        self._lora_request_cls = lora_request_cls
        self._loaded: dict[str, Adapter] = {}  # name -> adapter, for everything registered
        self._cached: set[str] = set()  # names add_lora loaded into vLLM

    def lora_request(self, adapter: Adapter) -> Any:
        try:
            return self._lora_request_cls(lora_name=adapter.name, lora_int_id=adapter.int_id, lora_path=adapter.path)
        except (ValueError, AssertionError) as exc:  # __post_init__: id < 1, empty path
            raise errors.FailedPrecondition(f"adapter {adapter.name!r}: {exc}", field="adapter") from exc

    async def load(self, engine: Any, name: str, path: str) -> AdapterInfo:
        known = name in self._loaded
        adapter = self.registry.load(name, path)  # idempotent for the same path; validates a new one
        self._loaded[name] = adapter
        if not known and hasattr(engine, "add_lora"):
            try:
                await engine.add_lora(self.lora_request(adapter))
            except errors.GatewayError:
                self._forget(name)
                raise
            except Exception as exc:  # noqa: BLE001 - any engine-side failure: this adapter cannot be served
                self._forget(name)
                raise errors.InvalidArgument(f"path: vLLM could not load adapter {name!r} from {path}: {exc}",
                                             field="path") from exc
            self._cached.add(name)
        return self.info(name)

    def _forget(self, name: str) -> None:
        self.registry.unload(name)
        self._loaded.pop(name, None)

    async def unload(self, engine: Any, name: str) -> None:
        self.registry.unload(name)  # NotFound, or FailedPrecondition while in use
        adapter = self._loaded.pop(name)
        if name in self._cached:
            self._cached.discard(name)
            try:
                await engine.remove_lora(adapter.int_id)
            except Exception:  # noqa: BLE001 - the registry no longer names it; vLLM's LRU evicts it in time
                log.warning("vLLM could not remove adapter %s (id %d)", name, adapter.int_id, exc_info=True)

    def acquire(self, name: str) -> Adapter:
        return self.registry.acquire(name)

    def release(self, name: str) -> None:
        self.registry.release(name)

    def infos(self) -> list[AdapterInfo]:
        out = []
        for info in self.registry.infos():
            if info.residency is Residency.DISK and info.name in self._cached:
                info = dataclasses.replace(info, residency=Residency.CPU)
            out.append(info)
        return out

    def info(self, name: str) -> AdapterInfo:
        return next(i for i in self.infos() if i.name == name)
