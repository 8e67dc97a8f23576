"""TensorRT-LLM iteration stats -> Prometheus gauges, with exactly one consumer of `get_stats_async`.

The stats are a drained FIFO: a second poller would steal entries (reference §10), so the executor owns the only
poller, keeps the latest entry, and exposes it two ways: `latest` (a dict, for any hook) and gauges on the
Prometheus registry handed to `register` (the server's, so they appear on its /metrics).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger(__name__)

# gauge suffix, help, path into the stats dict, scale
GAUGES: tuple[tuple[str, str, tuple[str, ...], float], ...] = (
    ("active_requests", "Requests TensorRT-LLM is running.", ("numActiveRequests",), 1.0),
    ("queued_requests", "Requests queued inside TensorRT-LLM.", ("numQueuedRequests",), 1.0),
    ("scheduled_requests", "Requests scheduled in the last iteration.", ("inflightBatchingStats", "numScheduledRequests"), 1.0),
    ("context_requests", "Requests in context (prefill) phase.", ("inflightBatchingStats", "numContextRequests"), 1.0),
    ("generation_requests", "Requests in generation phase.", ("inflightBatchingStats", "numGenRequests"), 1.0),
    ("iteration_latency_seconds", "Latency of the last iteration.", ("iterLatencyMS",), 1e-3),
    ("gpu_memory_bytes", "GPU memory in use.", ("gpuMemUsage",), 1.0),
    ("kv_cache_max_blocks", "KV cache blocks in all.", ("kvCacheStats", "maxNumBlocks"), 1.0),
    ("kv_cache_free_blocks", "KV cache blocks free.", ("kvCacheStats", "freeNumBlocks"), 1.0),
    ("kv_cache_used_blocks", "KV cache blocks in use.", ("kvCacheStats", "usedNumBlocks"), 1.0),
    ("kv_cache_hit_rate", "KV cache (prefix reuse) hit rate.", ("kvCacheStats", "cacheHitRate"), 1.0),
)
PREFIX = "trt_gateway_trtllm_"


class StatsPoller:
    def __init__(self, source: Callable[[float], AsyncIterable[dict[str, Any]]], interval_s: float, timeout_s: float):
        self._source = source  # llm.get_stats_async
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self.latest: dict[str, Any] = {}
        self._gauges: dict[str, Gauge] = {}
        self._iterations: Counter | None = None
        self._task: asyncio.Task[None] | None = None

    def register(self, registry: CollectorRegistry) -> None:
        for suffix, help_text, _, _ in GAUGES:
            self._gauges[suffix] = Gauge(PREFIX + suffix, help_text, registry=registry)
        self._iterations = Counter(PREFIX + "iterations", "Engine iterations seen in the stats.", registry=registry)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="trtllm-stats")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                async for stat in self._source(self._timeout_s):
                    self.update(stat)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - stats are best effort; the engine's health is watched elsewhere
                log.warning("reading TensorRT-LLM iteration stats failed", exc_info=True)
            await asyncio.sleep(self._interval_s)

    def update(self, stat: dict[str, Any]) -> None:
        self.latest = stat
        if self._iterations is not None:
            self._iterations.inc()
        for suffix, _, path, scale in GAUGES:
            value: Any = stat
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if isinstance(value, (int, float)) and suffix in self._gauges:
                self._gauges[suffix].set(value * scale)


def load_from_stats(stat: dict[str, Any]) -> dict[str, Any]:
    """ExecutorLoad fields from one iteration-stats entry: request counts and the KV cache's blocks."""
    out: dict[str, Any] = {}
    for field, key in (("num_running", "numActiveRequests"), ("num_waiting", "numQueuedRequests")):
        if isinstance(stat.get(key), int):
            out[field] = stat[key]
    kv = stat.get("kvCacheStats")
    if isinstance(kv, dict):
        total, used, size = kv.get("maxNumBlocks"), kv.get("usedNumBlocks"), kv.get("tokensPerBlock")
        if isinstance(total, int) and total > 0:
            out["num_blocks"] = total
            if isinstance(used, int):
                out["kv_cache_usage"] = min(1.0, used / total)
        if isinstance(size, int):
            out["block_size"] = size
    return out
