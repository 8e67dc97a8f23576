"""The test double must stay in line with vLLM's sources: import paths, parameter names and fields it relies on.

The lists below are copied from vLLM 0.26.0's own files (the released wheel, vllm-0.26.0-cp38-abi3: v1 `AsyncLLM`,
`SamplingParams`, `outputs.py`, `lora/request.py`, `v1/metrics`, `v1/spec_decode/metrics.py`, `config/speculative.py`,
`engine/arg_utils.py`), not derived from the double, so a drift in either one fails here. Where vLLM grew keywords over
time, only the ones the executor uses are required.
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
GENERATE_KEYWORDS = {"prompt_text", "lora_request", "tokenization_kwargs", "trace_headers", "priority",
                     "data_parallel_rank", "reasoning_ended", "reasoning_parser_kwargs"}
ABORT = ["request_id", "internal"]
FROM_ENGINE_ARGS = ["engine_args", "start_engine_loop", "usage_context", "stat_loggers"]
ENGINE_METHODS = ("generate", "abort", "add_lora", "remove_lora", "list_loras", "pin_lora", "get_tokenizer",
                  "check_health", "shutdown")  # 0.26 has no get_model_config: the executor reads .model_config
ASYNC_METHODS = ("abort", "add_lora", "remove_lora", "list_loras", "pin_lora", "check_health")
SYNC_METHODS = ("get_tokenizer", "shutdown")  # plain methods in 0.26
SAMPLING_USED = {"n", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature", "top_p", "top_k",
                 "min_p", "seed", "stop", "stop_token_ids", "ignore_eos", "max_tokens", "min_tokens", "logprobs",
                 "detokenize", "include_stop_str_in_output", "output_kind", "structured_outputs", "logit_bias"}
STRUCTURED = {"json", "regex", "choice", "grammar", "json_object", "disable_any_whitespace",
              "disable_additional_properties", "whitespace_pattern", "structural_tag", "_backend", "_backend_was_auto"}
STRUCTURED_CONFIG = {"backend", "disable_any_whitespace", "disable_additional_properties", "reasoning_parser",
                     "reasoning_parser_plugin", "enable_in_reasoning"}
COMPLETION_OUTPUT = ["index", "text", "token_ids", "cumulative_logprob", "logprobs", "routed_experts", "finish_reason",
                     "stop_reason", "lora_request"]
REQUEST_OUTPUT = ["request_id", "prompt", "prompt_token_ids", "prompt_logprobs", "outputs", "finished", "metrics",
                  "lora_request", "encoder_prompt", "encoder_prompt_token_ids", "num_cached_tokens",
                  "num_cache_creation_tokens", "kv_transfer_params", "ec_transfer_params", "kwargs"]
LORA_REQUEST = ["lora_name", "lora_int_id", "lora_path", "base_model_name", "tensorizer_config_dict", "load_inplace",
                "is_3d_lora_weight"]  # a msgspec Struct: __struct_fields__
FINISH_STRINGS = ["stop", "length", "abort", "error", "repetition"]
STAT_RECORD = ["scheduler_stats", "iteration_stats", "mm_cache_stats", "engine_idx"]
SPEC_STATS = {"num_spec_tokens", "num_drafts", "num_draft_tokens", "num_accepted_tokens"}
SCHEDULER_STATS = {"num_running_reqs", "num_waiting_reqs", "kv_cache_usage", "prefix_cache_stats",
                   "spec_decoding_stats"}
PREFIX_CACHE_STATS = {"requests", "queries", "hits"}
PROMPT_TOKEN_STATS = {"computed", "local_cache_hit", "external_kv_transfer", "cached_tokens", "total"}
SPEC_CONFIG_USED = {"method", "model", "num_speculative_tokens", "prompt_lookup_max", "prompt_lookup_min",
                    "draft_tensor_parallel_size"}  # 0.26 has no disable_by_batch_size / speculative_token_tree
SPEC_CONFIG_ABSENT = {"disable_by_batch_size", "speculative_token_tree"}
SPEC_METHODS = {"ngram", "medusa", "mlp_speculator", "draft_model", "suffix", "custom_class", "eagle", "eagle3",
                "extract_hidden_states", "dflash", "ngram_gpu", "dspark", "mtp", "deepseek_mtp", "qwen3_next_mtp"}
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
    for name in ASYNC_METHODS:
        assert inspect.iscoroutinefunction(getattr(AsyncLLM, name)), name
    for name in SYNC_METHODS:
        assert not inspect.iscoroutinefunction(getattr(AsyncLLM, name)), name
    assert not hasattr(AsyncLLM, "get_model_config")
    init = inspect.signature(AsyncLLM.__init__).parameters
    assert [n for n, p in init.items() if p.default is p.empty and n != "self"] == ["vllm_config", "executor_class",
                                                                                  "log_stats"]
    for prop in ("errored", "is_running", "is_stopped", "dead_error"):
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
    assert list(LoRARequest.__struct_fields__) == LORA_REQUEST and not dataclasses.is_dataclass(LoRARequest)
    assert [str(r) for r in FinishReason] == FINISH_STRINGS
    assert [k.name for k in RequestOutputKind] == ["CUMULATIVE", "DELTA", "FINAL_ONLY"]


def test_engine_side_classes() -> None:
    import typing

    from vllm import AsyncEngineArgs
    from vllm.config import SpeculativeConfig, StructuredOutputsConfig
    from vllm.config.speculative import SpeculativeMethod
    from vllm.v1.metrics.loggers import StatLoggerBase
    from vllm.v1.metrics.stats import IterationStats, PrefixCacheStats, PromptTokenStats, SchedulerStats
    from vllm.v1.spec_decode.metrics import SpecDecodingStats

    assert params(StatLoggerBase.record) == STAT_RECORD
    assert params(StatLoggerBase.__init__) == ["vllm_config", "engine_index"]
    assert SPEC_STATS <= {f.name for f in dataclasses.fields(SpecDecodingStats)}
    assert SCHEDULER_STATS <= {f.name for f in dataclasses.fields(SchedulerStats)}
    assert PREFIX_CACHE_STATS <= {f.name for f in dataclasses.fields(PrefixCacheStats)}
    assert {f.name for f in dataclasses.fields(PromptTokenStats)} == PROMPT_TOKEN_STATS
    iteration = IterationStats()
    assert (iteration.num_generation_tokens, iteration.num_preempted_reqs, iteration.num_prompt_tokens) == (0, 0, 0)
    assert isinstance(IterationStats.num_prompt_tokens, property)  # prompt_token_stats.total, cache hits included
    spec_fields = {f.name for f in dataclasses.fields(SpeculativeConfig)}
    assert SPEC_CONFIG_USED <= spec_fields and not SPEC_CONFIG_ABSENT & spec_fields
    methods: set[str] = set()
    pending = list(typing.get_args(SpeculativeMethod))
    while pending:  # nested Literals, as the executor reads them
        arg = pending.pop()
        methods.add(arg) if isinstance(arg, str) else pending.extend(typing.get_args(arg))
    assert SPEC_METHODS <= methods
    assert {f.name for f in dataclasses.fields(StructuredOutputsConfig)} == STRUCTURED_CONFIG
    assert ENGINE_ARGS_USED <= {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    assert dataclasses.is_dataclass(AsyncEngineArgs)
    assert isinstance(AsyncEngineArgs().structured_outputs_config, StructuredOutputsConfig)  # a default, not None


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
    with pytest.raises(ValueError, match="only use one kind"):
        StructuredOutputsParams(json="{}", regex="a")
    with pytest.raises(ValueError, match="must use one kind"):
        StructuredOutputsParams()
    with pytest.raises(VLLMValidationError, match=r"temperature must be in \[0, 2\]"):
        SamplingParams(temperature=2.5)
    sp = SamplingParams(stop=["###"])
    assert sp.max_tokens == 16 and sp.output_text_buffer_length == 2  # vLLM's default; stop holdback
    assert SamplingParams(temperature=0, top_k=5).top_k == 0  # greedy resets the other knobs
