"""Every Prometheus metric the gateway exports, in one place, on a registry owned by the server instance.

Besides the `trt_gateway_*` metrics, `RouterCollector` exports the gauges inference routers read to pick a replica
(the Gateway API Inference Extension's model-server protocol, under the `vllm:` names its endpoint picker knows):
waiting and running requests, KV-cache usage, the cache shape and the LoRA adapters in use.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from trt_gateway.types import ExecutorLoad, Usage

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass(frozen=True)
class ModelMetrics:
    """The children one request updates per token, looked up once per model: `labels()` takes a lock and hashes its
    labels on every call, which adds up at one observation per streamed token."""

    metrics: Metrics
    model: str
    ttft_seconds: Histogram
    itl_seconds: Histogram
    prompt_tokens: Counter
    completion_tokens: Counter

    def finished(self, usage: Usage, adapter: str) -> None:
        """Count one finished output. Adapter children are made here, once an output of that adapter finished, so
        a request naming an adapter that does not exist never creates a series."""
        m = self.metrics
        self.prompt_tokens.inc(usage.prompt_tokens)
        self.completion_tokens.inc(usage.completion_tokens)
        m.adapter_requests.labels(self.model, adapter).inc()
        m.adapter_prompt_tokens.labels(self.model, adapter).inc(usage.prompt_tokens)
        m.adapter_completion_tokens.labels(self.model, adapter).inc(usage.completion_tokens)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._models: dict[str, ModelMetrics] = {}
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "trt_gateway_requests", "Finished RPCs by method and status code.", ("method", "code"), registry=r
        )
        self.request_seconds = Histogram(
            "trt_gateway_request_duration_seconds", "RPC duration.", ("method",), buckets=_LATENCY_BUCKETS, registry=r
        )
        self.ttft_seconds = Histogram(
            "trt_gateway_time_to_first_token_seconds", "From arrival to the first token.", ("model",),
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.itl_seconds = Histogram(
            "trt_gateway_inter_token_latency_seconds", "Time between tokens of one output.", ("model",),
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.queue_seconds = Histogram(
            "trt_gateway_queue_time_seconds", "Time spent in the admission queue.", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.prompt_tokens = Counter("trt_gateway_prompt_tokens", "Prompt tokens processed.", ("model",), registry=r)
        self.completion_tokens = Counter(
            "trt_gateway_completion_tokens", "Tokens generated.", ("model",), registry=r
        )
        # Per LoRA adapter ("" = the base model), counted when an output finishes. Names are bounded by the adapters
        # an operator loads: a request naming an unknown adapter fails before it could be counted.
        self.adapter_requests = Counter(
            "trt_gateway_adapter_requests", "Finished outputs by LoRA adapter.", ("model", "adapter"), registry=r
        )
        self.adapter_prompt_tokens = Counter(
            "trt_gateway_adapter_prompt_tokens", "Prompt tokens by LoRA adapter.", ("model", "adapter"), registry=r
        )
        self.adapter_completion_tokens = Counter(
            "trt_gateway_adapter_completion_tokens", "Generated tokens by LoRA adapter.", ("model", "adapter"),
            registry=r,
        )
        self.queue_depth = Gauge("trt_gateway_queue_depth", "Requests waiting for admission.", registry=r)
        self.inflight = Gauge("trt_gateway_inflight_requests", "Requests admitted to the executor.", registry=r)
        self.active_streams = Gauge("trt_gateway_active_streams", "Open Generate/GenerateStream RPCs.", registry=r)
        self.rejected = Counter(
            "trt_gateway_rejected", "Requests refused or ended by the server, by reason.", ("reason",), registry=r
        )

    def model(self, model: str) -> ModelMetrics:
        """The per-model children, for a model the server serves (so the cache is bounded)."""
        found = self._models.get(model)
        if found is None:
            found = self._models[model] = ModelMetrics(
                metrics=self,
                model=model,
                ttft_seconds=self.ttft_seconds.labels(model),
                itl_seconds=self.itl_seconds.labels(model),
                prompt_tokens=self.prompt_tokens.labels(model),
                completion_tokens=self.completion_tokens.labels(model),
            )
        return found


@dataclass(frozen=True)
class Load:
    """What the router gauges are read from at scrape time."""

    model: str  # the default served model ("" before the executor started)
    queued: int  # requests waiting in the gateway's admission queue
    inflight: int  # requests admitted to the executor
    executor: ExecutorLoad | None


class RouterCollector(Collector):
    def __init__(self, load: Callable[[], Load]) -> None:
        self._load = load

    def collect(self) -> Iterator[GaugeMetricFamily]:
        load = self._load()
        if not load.model:
            return
        s = load.executor

        def gauge(name: str, doc: str, value: float, extra: dict[str, str] | None = None) -> GaugeMetricFamily:
            extra = extra or {}
            family = GaugeMetricFamily(name, doc, labels=["model_name", *extra])
            family.add_metric([load.model, *extra.values()], value)
            return family

        # Waiting counts the gateway's own queue too: a router must see load that has not reached the executor yet.
        running = s.num_running if s is not None else load.inflight
        waiting = load.queued + (s.num_waiting if s is not None else 0)
        yield gauge("vllm:num_requests_running", "Requests the executor is computing.", running)
        yield gauge("vllm:num_requests_waiting", "Requests waiting (admission queue and executor).", waiting)
        if s is None:
            return
        if s.num_blocks:
            usage = "KV-cache usage, 0..1."
            yield gauge("vllm:kv_cache_usage_perc", usage, s.kv_cache_usage)
            yield gauge("vllm:gpu_cache_usage_perc", usage + " (its name before vLLM 0.10)", s.kv_cache_usage)
            yield gauge("vllm:cache_config_info", "KV-cache shape (value 1).", 1,
                        {"block_size": str(s.block_size), "num_gpu_blocks": str(s.num_blocks)})
        if s.max_loras:
            yield gauge(
                "vllm:lora_requests_info", "LoRA adapters in use (value: the time of the reading).", time.time(),
                {"max_lora": str(s.max_loras), "running_lora_adapters": ",".join(s.running_adapters),
                 "waiting_lora_adapters": ",".join(s.waiting_adapters)},
            )
