"""The embedded PyTorch engine (nano-vllm shaped): paged KV cache, continuous batching, on-device sampling.

Entry point: `LLMEngine(EngineConfig(model=path))`, then `add_request` / `step` / `abort` / `finish`.
"""

from trt_gateway.engine.engine_config import EngineConfig, EngineConfigError
from trt_gateway.engine.llm_engine import LLMEngine, StepOutput
from trt_gateway.engine.sequence import SampledToken

__all__ = ["EngineConfig", "EngineConfigError", "LLMEngine", "SampledToken", "StepOutput"]
