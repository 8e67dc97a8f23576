"""The vllm executor's adapters: the gateway's registry in front of vLLM's LoRA cache.

vLLM names an adapter per request with `LoRARequest(lora_name, lora_int_id, lora_path)` and caches adapter weights by
`lora_int_id`: `max_loras` in GPU slots, `max_cpu_loras` in an LRU cache in host memory. `AsyncLLM.add_lora` loads an
adapter into that cache ahead of use and `remove_lora(id)` drops it. The gateway's registry (executors/adapter_registry:
path, adapter_config.json and rank checks, ids never reused, refcounts) stays the source of truth for
Load/Unload/List, because vLLM may evict an adapter from its cache and load it again from `lora_path` on next use:
- LoadAdapter validates the directory, then `add_lora` loads it now, so a bad adapter fails the RPC, not a request;
- UnloadAdapter refuses while requests use the adapter, then `remove_lora`;
- residency: GPU while a request uses it, CPU once `add_lora` loaded it (it may since have been evicted from the
  LRU cache; vLLM does not say), DISK when it has been registered only.
"""

from __future__ import annotations

import logging
from typing import Any

from trt_gateway import errors
from trt_gateway.executors.adapter_registry import Adapter, AdapterRegistry
from trt_gateway.types import AdapterInfo, Residency

log = logging.getLogger(__name__)


class VllmAdapters(AdapterRegistry):
    def __init__(self, model: str, max_lora_rank: int, lora_request_cls: type) -> None:
        super().__init__(model, max_lora_rank)
        self._lora_request_cls = lora_request_cls
        self._cached: set[str] = set()  # names add_lora loaded into vLLM

    def lora_request(self, adapter: Adapter) -> Any:
        return adapter.lora_request(self._lora_request_cls)

    async def add(self, engine: Any, name: str, path: str) -> AdapterInfo:
        """Register the adapter (idempotent for the same path; a new one is validated) and load it into vLLM."""
        known = name in self
        adapter = self.load(name, path)
        if not known and hasattr(engine, "add_lora"):
            try:
                await engine.add_lora(self.lora_request(adapter))
            except errors.GatewayError:
                self.unload(name)
                raise
            except Exception as exc:  # noqa: BLE001 - any engine-side failure: this adapter cannot be served
                self.unload(name)
                raise errors.InvalidArgument(f"path: vLLM could not load adapter {name!r} from {path}: {exc}",
                                             field="path") from exc
            self._cached.add(name)
        return self.info(adapter)

    async def remove(self, engine: Any, name: str) -> None:
        adapter = self.unload(name)  # NotFound, or FailedPrecondition while in use
        if name in self._cached:
            self._cached.discard(name)
            try:
                await engine.remove_lora(adapter.int_id)
            except Exception:  # noqa: BLE001 - the registry no longer names it; vLLM's LRU evicts it in time
                log.warning("vLLM could not remove adapter %s (id %d)", name, adapter.int_id, exc_info=True)

    def _idle_residency(self, name: str) -> Residency:
        return Residency.CPU if name in self._cached else Residency.DISK
