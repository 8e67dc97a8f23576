"""Test double of the `tensorrt_llm` package (TensorRT-LLM 1.0–1.2 LLM API), written from shared/reference/trtllm_api.md.

It reproduces the API surface the gateway codes against: import paths, keyword names, pydantic config classes that
forbid unknown fields, cumulative versus diff outputs, abort, iteration stats and the documented exceptions. The
"model" is scripted (`tensorrt_llm._fake.CONTROL`), with a byte-level tokenizer. Nothing here is NVIDIA code.
"""

from tensorrt_llm.llmapi.llm import LLM
from tensorrt_llm.llmapi.llm_args import LlmArgs, TorchLlmArgs, TrtLlmArgs
from tensorrt_llm.sampling_params import SamplingParams
from tensorrt_llm.version import __version__

BuildConfig = dict  # not simulated; exported because the real package exports it
DisaggregatedParams = dict
MultimodalEncoder = object

__all__ = ["LLM", "LlmArgs", "TorchLlmArgs", "TrtLlmArgs", "SamplingParams", "BuildConfig", "DisaggregatedParams",
           "MultimodalEncoder", "__version__"]
