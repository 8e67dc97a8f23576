"""`vllm.engine.async_llm_engine`: since the v0 engine was removed, AsyncLLMEngine is the v1 AsyncLLM."""

from vllm.v1.engine.async_llm import AsyncLLM

AsyncLLMEngine = AsyncLLM
