"""What the engine reports about itself to the layers above (metrics, routers): plain counts, no engine objects."""

from __future__ import annotations

from dataclasses import dataclass

from trt_gateway.engine.speculative.planner import SpeculationStats


@dataclass(frozen=True, slots=True)
class LoraStats:
    max_loras: int  # device slots
    running: tuple[str, ...]  # adapters of running sequences
    waiting: tuple[str, ...]  # adapters only waiting sequences use


@dataclass(frozen=True, slots=True)
class EngineStats:
    num_running: int
    num_waiting: int
    num_total_blocks: int
    num_free_blocks: int
    block_size: int  # tokens per KV block
    lora: LoraStats | None = None  # None: LoRA is off
    speculation: SpeculationStats | None = None  # None: speculative decoding is off

    @property
    def kv_cache_usage(self) -> float:
        """Fraction of KV blocks in use (prefix-cached blocks that no sequence holds count as free)."""
        used = self.num_total_blocks - self.num_free_blocks
        return used / self.num_total_blocks if self.num_total_blocks else 0.0
