"""vLLM engine statistics -> Prometheus collectors on the gateway's registry.

vLLM hands every engine step's `SchedulerStats` and `IterationStats` to its stat loggers, on the event loop of the
process that owns the `AsyncLLM` (here, the gateway's). `EngineStats.logger_class` makes a `StatLoggerBase` subclass
that vLLM instantiates as `cls(vllm_config, engine_index)` and calls `record(scheduler_stats, iteration_stats, ...)`
on; it forwards both to gauges and counters named `trt_gateway_vllm_*`. vLLM's own Prometheus logger keeps writing
its `vllm:*` metrics to the process-global registry as usual.

The stats classes are not a stable vLLM interface, so every field is read by name with a fallback: `kv_cache_usage`
was `gpu_cache_usage` in older versions; `spec_decoding_stats` is None without speculation; prefilled prompt tokens are
`IterationStats.prompt_token_stats.computed` in vLLM 0.26 (its `num_prompt_tokens` became a property that counts
prefix-cache hits too) and `num_prompt_tokens` in older versions.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger(__name__)
PREFIX = "trt_gateway_vllm_"

# gauge suffix, help, SchedulerStats field names (the first present wins)
GAUGES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("running_requests", "Requests in vLLM's running batch.", ("num_running_reqs",)),
    ("waiting_requests", "Requests waiting in vLLM's scheduler queue.", ("num_waiting_reqs",)),
    ("kv_cache_usage", "Fraction of vLLM's KV cache in use (1 = full).", ("kv_cache_usage", "gpu_cache_usage")),
)
# counter suffix, help, which stats object, field
COUNTERS: tuple[tuple[str, str, str, str], ...] = (
    ("prompt_tokens", "Prompt tokens vLLM prefilled (prefix-cache hits excluded).", "prompt", "computed"),
    ("generation_tokens", "Tokens vLLM generated.", "iteration", "num_generation_tokens"),
    ("preemptions", "Requests vLLM preempted.", "iteration", "num_preempted_reqs"),
    ("prefix_cache_queries", "Prompt tokens looked up in vLLM's prefix cache.", "prefix", "queries"),
    ("prefix_cache_hits", "Prompt tokens found in vLLM's prefix cache.", "prefix", "hits"),
    ("spec_decode_drafts", "Speculative drafts vLLM verified.", "spec", "num_drafts"),
    ("spec_decode_draft_tokens", "Speculative tokens vLLM proposed.", "spec", "num_draft_tokens"),
    ("spec_decode_accepted_tokens", "Speculative tokens vLLM accepted.", "spec", "num_accepted_tokens"),
)


class EngineStats:
    def __init__(self) -> None:
        self.latest: dict[str, float] = {}  # gauge values and counter totals, for any hook and for tests
        self._gauges: dict[str, Gauge] = {}
        self._counters: dict[str, Counter] = {}
        self._steps: Counter | None = None

    def register(self, registry: CollectorRegistry) -> None:
        for suffix, help_text, _ in GAUGES:
            self._gauges[suffix] = Gauge(PREFIX + suffix, help_text, registry=registry)
        for suffix, help_text, _, _ in COUNTERS:
            self._counters[suffix] = Counter(PREFIX + suffix, help_text, registry=registry)
        self._steps = Counter(PREFIX + "engine_steps", "Engine steps whose stats reached the gateway.", registry=registry)

    def record(self, scheduler_stats: Any, iteration_stats: Any) -> None:
        try:
            self._record(scheduler_stats, iteration_stats)
        except Exception:  # noqa: BLE001 - stats are best effort; they must never fail vLLM's output loop
            log.warning("recording vLLM engine stats failed", exc_info=True)

    def _record(self, scheduler_stats: Any, iteration_stats: Any) -> None:
        if self._steps is not None:
            self._steps.inc()
        if scheduler_stats is not None:
            for suffix, _, names in GAUGES:
                value = next((v for v in (getattr(scheduler_stats, n, None) for n in names) if _number(v)), None)
                if value is not None:
                    self.latest[suffix] = float(value)
                    if suffix in self._gauges:
                        self._gauges[suffix].set(value)
        prompt = getattr(iteration_stats, "prompt_token_stats", None)  # vLLM 0.26; before: num_prompt_tokens
        sources = {
            "iteration": iteration_stats,
            "prompt": prompt if prompt is not None else _Computed(getattr(iteration_stats, "num_prompt_tokens", None)),
            "prefix": getattr(scheduler_stats, "prefix_cache_stats", None),
            "spec": getattr(scheduler_stats, "spec_decoding_stats", None),
        }
        for suffix, _, source, name in COUNTERS:
            value = getattr(sources[source], name, None)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                self.latest[suffix] = self.latest.get(suffix, 0.0) + value
                if suffix in self._counters:
                    self._counters[suffix].inc(value)

    def logger_class(self, base: type | None) -> type:
        """A StatLoggerBase subclass for AsyncLLM's `stat_loggers=[...]` (vLLM calls the class as its factory)."""
        stats = self

        class GatewayStatLogger(base or object):  # type: ignore[misc]
            def __init__(self, vllm_config: Any = None, engine_index: int = 0, *args: Any, **kwargs: Any) -> None:
                self.engine_index = engine_index

            def record(self, scheduler_stats: Any, iteration_stats: Any, *args: Any, **kwargs: Any) -> None:
                stats.record(scheduler_stats, iteration_stats)

            def log_engine_initialized(self) -> None:
                pass

            def log(self) -> None:
                pass

        return GatewayStatLogger


class _Computed:
    """Older vLLM's IterationStats.num_prompt_tokens (prefilled tokens), read as 0.26's prompt_token_stats.computed."""

    def __init__(self, computed: Any) -> None:
        self.computed = computed


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
