"""LangChain integration for trt-gateway: `ChatTrtGateway` (chat model) and `TrtGatewayLLM` (completion LLM)."""

from langchain_trt_gateway._version import __version__
from langchain_trt_gateway.chat_models import ChatTrtGateway
from langchain_trt_gateway.llms import TrtGatewayLLM

__all__ = ["ChatTrtGateway", "TrtGatewayLLM", "__version__"]
