"""The test double must stay in line with vLLM's sources: import paths, parameter names and fields it relies on.

The lists below are copied from vLLM's own files (v1 `AsyncLLM`, `SamplingParams`, `outputs.py`, `lora/request.py`,
`v1/metrics`, `v1/spec_decode/metrics.py`, `config/speculative.py`; 0.26-era main), not derived from the double, so a
drift in either one fails here. Where vLLM grew keywords over time, only the ones the executor uses are required.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect

import pytest

IMPORTS = [
    ("vllm", "SamplingParams"), ("vllm", "AsyncEngineArgs"), ("vllm", "AsyncLLMEngine"), ("vllm", "TokensPrompt"),
    ("vllm", "RequestOutput"), ("vllm", "CompletionOutput"), ("vllm", "__version__"),
    ("vllm.v1.engine.async_llm", "AsyncLLM"), ("vllm.engine.arg_utils", "AsyncEngineArgs"),
    ("vllm.sampling_params", "SamplingParams"), ("vllm.sampling_params", "RequestOutputKind"),
    ("vllm.sampling_params", "StructuredOutputsParams"), ("vllm.lora.request", "LoRARequest"),
    ("vllm.outputs", "RequestOutput"), ("vllm.outputs", "CompletionOutput"), ("vllm.logprobs", "Logprob"),
    ("vllm.inputs", "TokensPrompt"), ("vllm.exceptions", "VLLMValidationError"),
    ("vllm.v1.engine.exceptions", "EngineDeadError"), ("vllm.v1.engine.exceptions", "EngineGenerateError"),
    ("vllm.v1.engine", "FinishReason"), ("vllm.v1.metrics.loggers", "StatLoggerBase"),
    ("vllm.v1.metrics.stats", "SchedulerStats"), ("vllm.v1.metrics.stats", "IterationStats"),
    ("vllm.v1.spec_decode.metrics", "SpecDecodingStats"), ("vllm.config", "SpeculativeConfig"),
    ("vllm.config", "StructuredOutputsConfig"), ("vllm.config.speculative", "SpeculativeMethod"),
]
GENERATE_POSITIONAL = ["prompt", "sampling_params", "request_id"]
GENERATE_KEYWORDS = {"lora_request", "priority", "trace_headers", "tokenization_kwargs", "data_parallel_rank"}
ABORT = ["request_id", "internal"]
FROM_ENGINE_ARGS = ["engine_args", "start_engine_loop", "usage_context", "stat_loggers"]
ENGINE_METHODS = ("generate", "abort", "add_lora", "remove_lora", "list_loras", "pin_lora", "get_tokenizer",
                  "get_model_config", "check_health", "shutdown")
SAMPLING_USED = {"n", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature", "top_p", "top_k",
                 "min_p", "seed", "stop", "stop_token_ids", "ignore_eos", "max_tokens", "min_tokens", "logprobs",
                 "detokenize", "include_stop_str_in_output", "output_kind", "structured_outputs", "logit_bias"}
STRUCTURED = {"json", "regex", "choice", "grammar", "json_object", "disable_any_whitespace",
              "disable_additional_properties", "whitespace_pattern", "structural_tag"}
COMPLETION_OUTPUT = ["index", "text", "token_ids", "cumulative_logprob", "logprobs", "routed_experts", "finish_reason",
                     "stop_reason", "lora_request", "kv_transfer_params"]
REQUEST_OUTPUT = ["request_id", "prompt", "prompt_token_ids", "prompt_logprobs", "outputs", "finished", "metrics",
                  "lora_request", "encoder_prompt", "encoder_prompt_token_ids", "num_cached_tokens", "kwargs"]
LORA_REQUEST_FIRST = ["lora_name", "lora_int_id", "lora_path"]
FINISH_STRINGS = ["stop", "length", "abort", "error", "repetition"]
STAT_RECORD = ["scheduler_stats", "iteration_stats", "mm_cache_stats", "engine_idx"]
SPEC_STATS = {"num_spec_tokens", "num_drafts", "num_draft_tokens", "num_accepted_tokens"}
SCHEDULER_STATS = {"num_running_reqs", "num_waiting_reqs", "kv_cache_usage", "prefix_cache_stats",
                   "spec_decoding_stats"}
SPEC_CONFIG_USED = {"method", "model", "num_speculative_tokens", "prompt_lookup_max", "prompt_lookup_min",
                    "disable_by_batch_size", "draft_tensor_parallel_size"}
SPEC_METHODS = {"ngram", "medusa", "mlp_speculator", "draft_model", "suffix", "eagle", "eagle3", "mtp", "ngram_gpu"}
ENGINE_ARGS_USED = {"model", "served_model_name", "tokenizer", "skip_tokenizer_init", "trust_remote_code",
                    "tensor_parallel_size", "pipeline_parallel_size", "dtype", "max_model_len",
                    "gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens", "enable_prefix_caching",
                    "enable_chunked_prefill", "enforce_eager", "load_format", "quantization", "kv_cache_dtype", "seed",
                    "max_logprobs", "structured_outputs_config", "speculative_config", "scheduling_policy",
                    "stream_interval", "disable_log_stats", "enable_lora", "max_loras", "max_lora_rank",
                    "max_cpu_loras", "enable_log_requests"}


def params(fn: object) -> list[str]:
    return [p for p in inspect.signature(fn).parameters if p not in ("self", "cls")]  # type: ignore[arg-type]


@pytest.mark.parametrize(("module", "symbol"), IMPORTS)
def test_import_paths(module: str, symbol: str) -> None:
    assert hasattr(importlib.import_module(module), symbol)


def test_async_llm_methods() -> None:
    from vllm import AsyncLLMEngine
    from vllm.v1.engine.async_llm import AsyncLLM

    assert AsyncLLMEngine is AsyncLLM  # the alias since the v0 engine was removed
    generate = inspect.signature(AsyncLLM.generate).parameters
    assert list(generate)[1:4] == GENERATE_POSITIONAL
    assert GENERATE_KEYWORDS <= {n for n, p in generate.items() if p.kind is p.KEYWORD_ONLY}
    assert inspect.isasyncgenfunction(AsyncLLM.generate)
    assert params(AsyncLLM.abort) == ABORT and inspect.iscoroutinefunction(AsyncLLM.abort)
    assert params(AsyncLLM.from_engine_args) == FROM_ENGINE_ARGS
    for name in ENGINE_METHODS:
        assert callable(getattr(AsyncLLM, name)), name
    for prop in ("errored", "is_running", "dead_error"):
        assert isinstance(getattr(AsyncLLM, prop), property), prop


def test_data_classes() -> None:
    from vllm.lora.request import LoRARequest
    from vllm.outputs import CompletionOutput, RequestOutput
    from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams
    from vllm.v1.engine import FinishReason

    assert SAMPLING_USED <= set(SamplingParams.__struct_fields__)
    assert {f.name for f in dataclasses.fields(StructuredOutputsParams)} == STRUCTURED
    assert [f.name for f in dataclasses.fields(CompletionOutput)] == COMPLETION_OUTPUT
    assert params(RequestOutput.__init__) == REQUEST_OUTPUT
    assert [f.name for f in dataclasses.fields(LoRARequest)][:3] == LORA_REQUEST_FIRST
    assert [str(r) for r in FinishReason] == FINISH_STRINGS
    assert [k.name for k in RequestOutputKind] == ["CUMULATIVE", "DELTA", "FINAL_ONLY"]


def test_engine_side_classes() -> None:
    import typing

    from vllm import AsyncEngineArgs
    from vllm.config import SpeculativeConfig
    from vllm.config.speculative import SpeculativeMethod
    from vllm.v1.metrics.loggers import StatLoggerBase
    from vllm.v1.metrics.stats import SchedulerStats
    from vllm.v1.spec_decode.metrics import SpecDecodingStats

    assert params(StatLoggerBase.record) == STAT_RECORD
    assert params(StatLoggerBase.__init__) == ["vllm_config", "engine_index"]
    assert SPEC_STATS <= {f.name for f in dataclasses.fields(SpecDecodingStats)}
    assert SCHEDULER_STATS <= {f.name for f in dataclasses.fields(SchedulerStats)}
    assert SPEC_CONFIG_USED <= {f.name for f in dataclasses.fields(SpeculativeConfig)}
    assert set(typing.get_args(SpeculativeMethod)) >= {"ngram", "draft_model", "suffix", "ngram_gpu"}
    assert ENGINE_ARGS_USED <= {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    assert dataclasses.is_dataclass(AsyncEngineArgs)


def test_documented_behaviours() -> None:
    """A few vLLM facts the executor depends on, checked on the double itself."""
    from vllm.exceptions import VLLMValidationError
    from vllm.lora.request import LoRARequest
    from vllm.sampling_params import SamplingParams, StructuredOutputsParams

    with pytest.raises(ValueError, match="id must be > 0"):
        LoRARequest("a", 0, "/x")
    with pytest.raises(AssertionError):
        LoRARequest("a", 1, "")
    assert LoRARequest("a", 1, "/x") == LoRARequest("a", 2, "/y")  # equal by name
    assert issubclass(VLLMValidationError, ValueError)
    with pytest.raises(VLLMValidationError):
        SamplingParams(top_p=0.0)
    with pytest.raises(TypeError):
        SamplingParams(bogus=1)
    with pytest.raises(VLLMValidationError):
        StructuredOutputsParams(json="{}", regex="a")
    sp = SamplingParams(stop=["###"])
    assert sp.max_tokens == 16 and sp.output_text_buffer_length == 2  # vLLM's default; stop holdback
    assert SamplingParams(temperature=0, top_k=5).top_k == 0  # greedy resets the other knobs
