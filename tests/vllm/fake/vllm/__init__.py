"""A test double of the vLLM API surface the gateway's `vllm` executor uses (module paths as in vLLM 0.26).

Behaviour that matters is real: DELTA outputs merged while the consumer lags, stop strings held back and cut, finish
and stop reasons, abort semantics (generate() aborts on cancel/close; AsyncLLM.abort ends the stream with "abort"),
LoRARequest validation, the exceptions vLLM raises. The model itself is scripted (`vllm._fake`).
"""

from vllm.engine.arg_utils import AsyncEngineArgs, EngineArgs
from vllm.engine.async_llm_engine import AsyncLLMEngine
from vllm.entrypoints.llm import LLM
from vllm.inputs import TextPrompt, TokensPrompt
from vllm.outputs import CompletionOutput, RequestOutput
from vllm.sampling_params import RequestOutputKind, SamplingParams
from vllm.version import __version__

__all__ = [
    "LLM", "AsyncEngineArgs", "AsyncLLMEngine", "CompletionOutput", "EngineArgs", "RequestOutput", "RequestOutputKind",
    "SamplingParams", "TextPrompt", "TokensPrompt", "__version__",
]
