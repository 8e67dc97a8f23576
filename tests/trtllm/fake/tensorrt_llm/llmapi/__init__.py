from tensorrt_llm.executor.request import LoRARequest
from tensorrt_llm.executor.result import CompletionOutput
from tensorrt_llm.executor.utils import RequestError
from tensorrt_llm.llmapi.llm import LLM, RequestOutput
from tensorrt_llm.llmapi.llm_args import (
    AutoDecodingConfig,
    CapacitySchedulerPolicy,
    CudaGraphConfig,
    DraftTargetDecodingConfig,
    Eagle3DecodingConfig,
    EagleDecodingConfig,
    KvCacheConfig,
    LlmArgs,
    LookaheadDecodingConfig,
    MedusaDecodingConfig,
    MTPDecodingConfig,
    NGramDecodingConfig,
    SaveHiddenStatesDecodingConfig,
    SchedulerConfig,
    TorchLlmArgs,
    TrtLlmArgs,
    UserProvidedDecodingConfig,
)
from tensorrt_llm.sampling_params import GuidedDecodingParams, SamplingParams

__all__ = [
    "LLM", "RequestOutput", "CompletionOutput", "SamplingParams", "GuidedDecodingParams", "LoRARequest", "RequestError",
    "KvCacheConfig", "CudaGraphConfig", "SchedulerConfig", "CapacitySchedulerPolicy", "LlmArgs", "TorchLlmArgs",
    "TrtLlmArgs", "EagleDecodingConfig", "Eagle3DecodingConfig", "MTPDecodingConfig", "NGramDecodingConfig",
    "DraftTargetDecodingConfig", "MedusaDecodingConfig", "LookaheadDecodingConfig", "UserProvidedDecodingConfig",
    "AutoDecodingConfig", "SaveHiddenStatesDecodingConfig",
]
