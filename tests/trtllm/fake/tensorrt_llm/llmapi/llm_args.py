"""`tensorrt_llm.llmapi.llm_args` [ARGS-12, ARGS-13]: pydantic argument and config classes that forbid extra fields."""

from __future__ import annotations

from enum import Enum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tensorrt_llm.lora_helper import LoraConfig


class StrictBaseModel(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class KvCacheConfig(StrictBaseModel):
    enable_block_reuse: bool = True
    max_tokens: int | None = None
    free_gpu_memory_fraction: float | None = Field(default=0.9, ge=0, le=1)
    max_attention_window: list[int] | None = None
    sink_token_length: int | None = None
    host_cache_size: int | None = None
    onboard_blocks: bool = True
    cross_kv_cache_fraction: float | None = None
    secondary_offload_min_priority: int | None = None
    event_buffer_max_size: int = 0
    attention_dp_events_gather_period_ms: int = 5
    enable_partial_reuse: bool = True
    copy_on_partial_reuse: bool = True
    use_uvm: bool = False
    max_gpu_total_bytes: int = 0
    dtype: str = "auto"
    mamba_ssm_cache_dtype: str = "auto"
    tokens_per_block: int = 32


class CudaGraphConfig(StrictBaseModel):
    batch_sizes: list[int] | None = None
    max_batch_size: int = 0
    enable_padding: bool = False


class CapacitySchedulerPolicy(str, Enum):
    MAX_UTILIZATION = "MAX_UTILIZATION"
    GUARANTEED_NO_EVICT = "GUARANTEED_NO_EVICT"
    STATIC_BATCH = "STATIC_BATCH"


class SchedulerConfig(StrictBaseModel):
    capacity_scheduler_policy: CapacitySchedulerPolicy = CapacitySchedulerPolicy.GUARANTEED_NO_EVICT
    context_chunking_policy: Any = None
    dynamic_batch_config: Any = None


class PeftCacheConfig(StrictBaseModel):
    num_host_module_layer: int = 0
    num_device_module_layer: int = 0
    optimal_adapter_size: int = 8
    max_adapter_size: int = 64
    num_put_workers: int = 1
    num_ensure_workers: int = 1
    num_copy_streams: int = 1
    max_pages_per_block_host: int = 24
    max_pages_per_block_device: int = 8
    device_cache_percent: float = 0.02
    host_cache_size: int = 1 << 30
    lora_prefetch_dir: str | None = None


# -- speculative decoding ------------------------------------------------------------------------------------------


class DecodingBaseConfig(StrictBaseModel):
    max_draft_len: int | None = None
    max_total_draft_tokens: int | None = None
    speculative_model_dir: str | None = None
    max_concurrency: int | None = None
    load_format: str | None = None
    acceptance_window: int | None = None
    acceptance_length_threshold: float | None = None

    decoding_type: ClassVar[str] = "base"
    backends: ClassVar[tuple[str, ...]] = ("pytorch", "tensorrt", "_autodeploy")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecodingBaseConfig:
        data = dict(data)
        key = data.pop("decoding_type")
        classes = {"MTP": MTPDecodingConfig, "Medusa": MedusaDecodingConfig, "Eagle": EagleDecodingConfig,
                   "Eagle3": Eagle3DecodingConfig, "Lookahead": LookaheadDecodingConfig,
                   "NGram": NGramDecodingConfig, "DraftTarget": DraftTargetDecodingConfig,
                   "SaveState": SaveHiddenStatesDecodingConfig, "UserProvided": UserProvidedDecodingConfig,
                   "AUTO": AutoDecodingConfig}
        if key not in classes:
            raise ValueError(f"Invalid decoding type: {key}")
        return classes[key](**data)

    def supports_backend(self, backend: str) -> bool:
        return backend in self.backends


class EagleDecodingConfig(DecodingBaseConfig):
    eagle_choices: list[list[int]] | None = None
    greedy_sampling: bool | None = True
    posterior_threshold: float | None = None
    use_dynamic_tree: bool | None = False
    dynamic_tree_max_topK: int | None = None
    num_eagle_layers: int | None = None
    max_non_leaves_per_layer: int | None = None
    eagle3_one_model: bool | None = True
    eagle3_layers_to_capture: set[int] | None = None
    decoding_type: ClassVar[str] = "Eagle"

    @model_validator(mode="after")
    def _required(self) -> EagleDecodingConfig:
        if self.max_draft_len is None:
            raise ValueError("max_draft_len is required for Eagle")
        if self.speculative_model_dir is None:
            raise ValueError("speculative_model_dir is required for Eagle")
        self.num_eagle_layers = self.max_draft_len
        return self


class Eagle3DecodingConfig(EagleDecodingConfig):
    eagle3_model_arch: Literal["llama3", "mistral_large3"] = "llama3"
    decoding_type: ClassVar[str] = "Eagle3"
    backends: ClassVar[tuple[str, ...]] = ("pytorch",)


class MTPDecodingConfig(DecodingBaseConfig):
    num_nextn_predict_layers: int = 1
    use_relaxed_acceptance_for_thinking: bool = False
    relaxed_topk: int = 1
    relaxed_delta: float = 0.0
    use_mtp_vanilla: bool = False
    mtp_eagle_one_model: bool = True
    decoding_type: ClassVar[str] = "MTP"
    backends: ClassVar[tuple[str, ...]] = ("pytorch",)

    @model_validator(mode="after")
    def _draft_len(self) -> MTPDecodingConfig:
        self.max_draft_len = self.num_nextn_predict_layers
        return self


class NGramDecodingConfig(DecodingBaseConfig):
    max_matching_ngram_size: int = 0
    is_keep_all: bool = True
    is_use_oldest: bool = True
    is_public_pool: bool = True
    decoding_type: ClassVar[str] = "NGram"
    backends: ClassVar[tuple[str, ...]] = ("pytorch", "_autodeploy")

    @model_validator(mode="after")
    def _positive(self) -> NGramDecodingConfig:
        if not self.max_draft_len or self.max_draft_len <= 0 or self.max_matching_ngram_size <= 0:
            raise ValueError("max_draft_len and max_matching_ngram_size must be > 0")
        return self


class DraftTargetDecodingConfig(DecodingBaseConfig):
    decoding_type: ClassVar[str] = "Draft_Target"
    backends: ClassVar[tuple[str, ...]] = ("pytorch",)

    @model_validator(mode="after")
    def _required(self) -> DraftTargetDecodingConfig:
        if not self.max_draft_len or self.max_draft_len <= 0 or self.speculative_model_dir is None:
            raise ValueError("DraftTarget needs max_draft_len > 0 and speculative_model_dir")
        return self


class MedusaDecodingConfig(DecodingBaseConfig):
    medusa_choices: list[list[int]] | None = None
    num_medusa_heads: int | None = None
    decoding_type: ClassVar[str] = "Medusa"
    backends: ClassVar[tuple[str, ...]] = ("tensorrt",)


class LookaheadDecodingConfig(DecodingBaseConfig):
    max_window_size: int = 4
    max_ngram_size: int = 3
    max_verification_set_size: int = 4
    decoding_type: ClassVar[str] = "Lookahead"
    backends: ClassVar[tuple[str, ...]] = ("tensorrt",)

    @model_validator(mode="after")
    def _positive(self) -> LookaheadDecodingConfig:
        if min(self.max_window_size, self.max_ngram_size, self.max_verification_set_size) <= 0:
            raise ValueError("Lookahead sizes must be > 0")
        return self


class UserProvidedDecodingConfig(DecodingBaseConfig):
    drafter: Any
    resource_manager: Any = None
    decoding_type: ClassVar[str] = "User_Provided"
    backends: ClassVar[tuple[str, ...]] = ("pytorch", "_autodeploy")


class AutoDecodingConfig(DecodingBaseConfig):
    decoding_type: ClassVar[str] = "AUTO"
    backends: ClassVar[tuple[str, ...]] = ("pytorch", "_autodeploy")


class SaveHiddenStatesDecodingConfig(DecodingBaseConfig):
    output_directory: str
    write_interval: int = 20
    file_prefix: str = "data"
    eagle3_layers_to_capture: set[int]
    decoding_type: ClassVar[str] = "SaveState"
    backends: ClassVar[tuple[str, ...]] = ("pytorch",)


# -- LLM arguments -------------------------------------------------------------------------------------------------


class BaseLlmArgs(StrictBaseModel):
    model: str
    tokenizer: Any = None
    tokenizer_mode: str = "auto"
    skip_tokenizer_init: bool = False
    trust_remote_code: bool = False
    tensor_parallel_size: int = Field(default=1, ge=1)
    pipeline_parallel_size: int = Field(default=1, ge=1)
    dtype: str = "auto"
    revision: str | None = None
    tokenizer_revision: str | None = None
    max_batch_size: int | None = None
    max_num_tokens: int | None = 8192
    max_seq_len: int | None = None
    max_input_len: int | None = None
    max_beam_width: int | None = None
    enable_chunked_prefill: bool = False
    enable_attention_dp: bool = False
    guided_decoding_backend: Literal["xgrammar", "llguidance"] | None = None
    enable_iter_perf_stats: bool = False
    enable_iter_req_stats: bool = False
    iter_stats_max_iterations: int | None = None
    return_perf_metrics: bool = False
    perf_metrics_max_requests: int = 0
    num_postprocess_workers: int = 0
    reasoning_parser: str | None = None
    kv_cache_config: KvCacheConfig = Field(default_factory=KvCacheConfig)
    scheduler_config: SchedulerConfig = Field(default_factory=SchedulerConfig)
    speculative_config: DecodingBaseConfig | None = None
    lora_config: LoraConfig | None = None
    peft_cache_config: PeftCacheConfig | None = None
    orchestrator_type: Literal["rpc", "ray"] | None = None
    gather_generation_logits: bool = False
    enable_lora: bool = False  # a TRT-engine flag; ignored by PyTorch when lora_config is given
    build_config: Any = None

    backend_name: ClassVar[str] = "pytorch"

    @model_validator(mode="after")
    def validate_speculative_config(self) -> BaseLlmArgs:
        spec = self.speculative_config
        if spec is not None and not spec.supports_backend(self.backend_name):
            raise ValueError(f"Speculation type {spec.decoding_type} does not support backend {self.backend_name}")
        return self


class TorchLlmArgs(BaseLlmArgs):
    disable_overlap_scheduler: bool = False
    cuda_graph_config: CudaGraphConfig | None = Field(default_factory=CudaGraphConfig)
    stream_interval: int = Field(default=1, gt=0)
    print_iter_log: bool = False
    sampler_type: str = "auto"
    attn_backend: str = "TRTLLM"
    moe_config: Any = None
    torch_compile_config: Any = None


class TrtLlmArgs(BaseLlmArgs):
    enable_tqdm: bool = False
    workspace: str | None = None
    enable_build_cache: Any = False
    extended_runtime_perf_knob_config: Any = None
    calib_config: Any = None
    embedding_parallel_mode: str = "SHARDING_ALONG_VOCAB"
    fast_build: bool = False
    enable_prompt_adapter: bool = False
    max_prompt_adapter_token: int = 0
    batching_type: Any = None
    normalize_log_probs: bool = False

    backend_name: ClassVar[str] = "tensorrt"


LlmArgs = TorchLlmArgs
TRT_ONLY_FIELDS = frozenset(TrtLlmArgs.model_fields) - frozenset(TorchLlmArgs.model_fields)
