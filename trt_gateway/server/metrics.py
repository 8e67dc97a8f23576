"""Every Prometheus metric the gateway exports, in one place, on a registry owned by the server instance."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from trt_gateway.types import Usage

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
            "trt_gateway_rejected", "Requests refused by admission, by reason.", ("reason",), registry=r
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
