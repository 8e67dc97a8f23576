"""Prometheus metrics of the embedded engine, read from its counters at scrape time (nothing runs in between).

Speculative decoding: drafts proposed and accepted, the acceptance rate, and the accepted length (tokens one
verification produced: the accepted drafts plus the correction or bonus token) as a histogram.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

PREFIX = "trt_gateway_spec_"


class SpeculationCollector(Collector):
    def __init__(self, model: str, mode: str, stats: Callable[[], Any]) -> None:
        self._model = model
        self._mode = mode
        self._stats = stats  # -> SpeculationStats snapshot (engine/speculative/planner.py), or None before start

    def collect(self) -> Iterator[Any]:
        s = self._stats()
        if s is None:
            return
        labels, values = ["model", "mode"], [self._model, self._mode]

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(PREFIX + name, doc, labels=labels)
            family.add_metric(values, value)
            return family

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(PREFIX + name, doc, labels=labels)
            family.add_metric(values, value)
            return family

        yield counter("draft_tokens", "Draft tokens proposed.", s.draft_tokens)
        yield counter("accepted_tokens", "Draft tokens the target model accepted.", s.accepted_tokens)
        yield counter("verifications", "Sequence-steps that verified drafts.", s.verifications)
        yield gauge("acceptance_rate", "Accepted / proposed draft tokens since start.", s.acceptance_rate)
        yield gauge("mean_accepted_length", "Tokens per verification since start.", s.mean_accepted_length)
        histogram = HistogramMetricFamily(
            PREFIX + "accepted_length", "Tokens one verification produced (accepted drafts + 1).", labels=labels
        )
        cumulative, buckets = 0, []
        for n, count in enumerate(s.accepted_length):
            cumulative += count
            buckets.append((str(float(n + 1)), cumulative))
        buckets.append(("+Inf", s.verifications))
        histogram.add_metric(values, buckets, sum_value=s.verifications + s.accepted_tokens)
        yield histogram
