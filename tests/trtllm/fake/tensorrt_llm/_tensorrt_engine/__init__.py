"""`tensorrt_llm._tensorrt_engine.LLM`: the TensorRT-engine LLM (Medusa, Lookahead, prompt adapters)."""

from tensorrt_llm.llmapi.llm import _TrtLLM as LLM

__all__ = ["LLM"]
