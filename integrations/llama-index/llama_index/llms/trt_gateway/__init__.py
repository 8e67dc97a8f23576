"""LlamaIndex LLM integration for trt-gateway."""

from llama_index.llms.trt_gateway.base import TrtGateway

__all__ = ["TrtGateway"]
