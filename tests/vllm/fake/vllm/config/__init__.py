"""`vllm.config`: the config objects the double builds from AsyncEngineArgs (a small subset of VllmConfig)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vllm.config.speculative import SpeculativeConfig

STRUCTURED_BACKENDS = ("auto", "xgrammar", "guidance", "outlines", "lm-format-enforcer")


@dataclass
class StructuredOutputsConfig:  # a pydantic dataclass in vLLM (extra fields forbidden); ValidationError is a ValueError
    backend: str = "auto"
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    reasoning_parser: str = ""
    reasoning_parser_plugin: str = ""
    enable_in_reasoning: bool = False

    def __post_init__(self) -> None:
        if self.backend not in STRUCTURED_BACKENDS:
            raise ValueError(f"Input should be one of {', '.join(STRUCTURED_BACKENDS)} [input_value={self.backend!r}]")


@dataclass
class ModelConfig:
    model: str
    served_model_name: str
    max_model_len: int
    vocab_size: int
    max_logprobs: int
    skip_tokenizer_init: bool

    def get_vocab_size(self) -> int:
        return self.vocab_size


@dataclass
class LoRAConfig:
    max_lora_rank: int = 16
    max_loras: int = 1
    max_cpu_loras: int | None = None


@dataclass
class CacheConfig:
    enable_prefix_caching: bool = True
    block_size: int = 16


@dataclass
class SchedulerConfig:
    max_num_seqs: int = 256
    scheduling_policy: str = "fcfs"
    stream_interval: int = 1


@dataclass
class VllmConfig:
    model_config: ModelConfig
    cache_config: CacheConfig = field(default_factory=CacheConfig)
    scheduler_config: SchedulerConfig = field(default_factory=SchedulerConfig)
    lora_config: LoRAConfig | None = None
    speculative_config: SpeculativeConfig | None = None
    structured_outputs_config: StructuredOutputsConfig = field(default_factory=StructuredOutputsConfig)
    load_format: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)


__all__ = ["CacheConfig", "LoRAConfig", "ModelConfig", "SchedulerConfig", "SpeculativeConfig",
           "StructuredOutputsConfig", "VllmConfig"]
