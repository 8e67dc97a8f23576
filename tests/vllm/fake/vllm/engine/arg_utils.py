"""`vllm.engine.arg_utils`: EngineArgs / AsyncEngineArgs (dataclasses: an unknown keyword is a TypeError) and the
checks `create_engine_config` makes before any model loads."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vllm import _fake
from vllm.config import (
    CacheConfig,
    LoRAConfig,
    ModelConfig,
    SchedulerConfig,
    SpeculativeConfig,
    StructuredOutputsConfig,
    VllmConfig,
)

POSSIBLE_MAX_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
LOAD_FORMATS = ("auto", "pt", "safetensors", "npcache", "dummy", "tensorizer", "sharded_state", "gguf",
                "bitsandbytes", "mistral", "runai_streamer", "fastsafetensors")


@dataclass
class EngineArgs:
    model: str = "facebook/opt-125m"
    served_model_name: str | list[str] | None = None
    tokenizer: str | None = None
    skip_tokenizer_init: bool = False
    trust_remote_code: bool = False
    download_dir: str | None = None
    load_format: str = "auto"
    dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    seed: int = 0
    max_model_len: int | None = None
    distributed_executor_backend: str | None = None
    pipeline_parallel_size: int = 1
    tensor_parallel_size: int = 1
    enable_prefix_caching: bool | None = None
    gpu_memory_utilization: float = 0.9
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    max_logprobs: int = 20
    disable_log_stats: bool = False
    revision: str | None = None
    quantization: str | None = None
    enforce_eager: bool = False
    enable_lora: bool = False
    max_loras: int = 1
    max_lora_rank: int = 16
    max_cpu_loras: int | None = None
    speculative_config: dict[str, Any] | None = None
    structured_outputs_config: StructuredOutputsConfig = field(default_factory=StructuredOutputsConfig)
    scheduling_policy: str = "fcfs"
    enable_chunked_prefill: bool | None = None
    stream_interval: int = 1
    async_scheduling: bool | None = None

    def create_engine_config(self, usage_context: Any = None) -> VllmConfig:
        model = Path(self.model)
        if not (model / "config.json").is_file():
            raise ValueError(f"Invalid repository ID or local directory specified: '{self.model}'")
        hf = json.loads((model / "config.json").read_text())
        derived = int(hf.get("max_position_embeddings", 2048))
        if self.max_model_len is not None and self.max_model_len > derived:
            raise ValueError(f"User-specified max_model_len ({self.max_model_len}) is greater than the derived "
                             f"max_model_len (max_position_embeddings={derived} in model's config.json).")
        if self.tensor_parallel_size < 1 or self.pipeline_parallel_size < 1:
            raise ValueError("tensor_parallel_size and pipeline_parallel_size must be >= 1")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"GPU memory utilization must be within (0, 1]. Got {self.gpu_memory_utilization}.")
        if self.load_format not in LOAD_FORMATS:
            raise ValueError(f"Unknown load format: {self.load_format}")
        if self.scheduling_policy not in ("fcfs", "priority"):
            raise ValueError(f"Input should be 'fcfs' or 'priority' [input_value={self.scheduling_policy!r}]")
        lora = None
        if self.enable_lora:
            if self.max_lora_rank not in POSSIBLE_MAX_RANKS:
                raise ValueError(f"max_lora_rank ({self.max_lora_rank}) must be one of {POSSIBLE_MAX_RANKS}.")
            cpu = self.max_cpu_loras if self.max_cpu_loras is not None else self.max_loras
            if cpu < self.max_loras:
                raise ValueError(f"max_cpu_loras ({cpu}) must be >= max_loras ({self.max_loras})")
            lora = LoRAConfig(self.max_lora_rank, self.max_loras, cpu)
        spec = None
        if self.speculative_config is not None:
            unknown = sorted(set(self.speculative_config) - set(SpeculativeConfig.__dataclass_fields__))
            if unknown:
                raise ValueError(f"1 validation error for SpeculativeConfig\n{unknown[0]}\n  Unexpected keyword argument")
            spec = SpeculativeConfig(**self.speculative_config)
        vocab = int(hf.get("vocab_size", _fake.VOCAB_SIZE))
        names = self.served_model_name
        model_config = ModelConfig(
            model=self.model, served_model_name=names[0] if isinstance(names, list) else names or self.model,
            max_model_len=self.max_model_len or derived, vocab_size=vocab, max_logprobs=self.max_logprobs,
            skip_tokenizer_init=self.skip_tokenizer_init,
        )
        return VllmConfig(
            model_config=model_config,
            cache_config=CacheConfig(enable_prefix_caching=self.enable_prefix_caching is not False),
            scheduler_config=SchedulerConfig(max_num_seqs=self.max_num_seqs or 256,
                                             scheduling_policy=self.scheduling_policy,
                                             stream_interval=self.stream_interval),
            lora_config=lora,
            speculative_config=spec,
            structured_outputs_config=self.structured_outputs_config,
            load_format=self.load_format,
            extra={"multiproc_method": os.environ.get("VLLM_WORKER_MULTIPROC_METHOD")},
        )


@dataclass
class AsyncEngineArgs(EngineArgs):
    enable_log_requests: bool = False
