from tensorrt_llm.executor.executor import GenerationExecutor
from tensorrt_llm.executor.request import LoRARequest, PromptAdapterRequest
from tensorrt_llm.executor.result import CompletionOutput, GenerationResult, IterationResult
from tensorrt_llm.executor.utils import CppExecutorError, RequestError

__all__ = ["GenerationExecutor", "LoRARequest", "PromptAdapterRequest", "CompletionOutput", "GenerationResult",
           "IterationResult", "CppExecutorError", "RequestError"]
