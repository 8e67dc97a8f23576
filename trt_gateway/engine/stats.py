"""What the engine reports about itself to the layers above: its load (the backend-neutral `ExecutorLoad` routers
read) and, when speculative decoding is on, its acceptance counters. Plain values, no engine objects."""

from __future__ import annotations

from dataclasses import dataclass

from trt_gateway.engine.speculative.planner import SpeculationStats
from trt_gateway.types import ExecutorLoad


@dataclass(frozen=True, slots=True)
class EngineStats:
    load: ExecutorLoad
    speculation: SpeculationStats | None = None  # None: speculative decoding is off
