"""The test double must stay in line with shared/reference/trtllm_api.md: import paths and parameter names per class.

The lists below are copied from the reference (section numbers in comments), not derived from the double, so a
drift in either one fails here.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect

import pytest

# §1: (module, symbol) imports that work in 1.0–1.2 (Eagle3DecodingConfig only in newer ones; the double has it).
IMPORTS = [
    ("tensorrt_llm", "LLM"), ("tensorrt_llm.llmapi", "LLM"), ("tensorrt_llm._tensorrt_engine", "LLM"),
    ("tensorrt_llm", "SamplingParams"), ("tensorrt_llm.llmapi", "SamplingParams"),
    ("tensorrt_llm.sampling_params", "SamplingParams"),
    ("tensorrt_llm.llmapi", "GuidedDecodingParams"), ("tensorrt_llm.sampling_params", "GuidedDecodingParams"),
    ("tensorrt_llm.llmapi", "RequestOutput"), ("tensorrt_llm.llmapi", "CompletionOutput"),
    ("tensorrt_llm.executor.result", "CompletionOutput"),
    ("tensorrt_llm.executor.request", "LoRARequest"), ("tensorrt_llm.executor", "LoRARequest"),
    ("tensorrt_llm.executor.request", "PromptAdapterRequest"),
    ("tensorrt_llm.lora_helper", "LoraConfig"), ("tensorrt_llm.lora_manager", "LoraConfig"),
    ("tensorrt_llm.llmapi", "KvCacheConfig"), ("tensorrt_llm.llmapi", "CudaGraphConfig"),
    ("tensorrt_llm.llmapi", "SchedulerConfig"), ("tensorrt_llm.llmapi", "CapacitySchedulerPolicy"),
    ("tensorrt_llm.llmapi", "RequestError"), ("tensorrt_llm.llmapi", "TorchLlmArgs"),
    ("tensorrt_llm.llmapi", "TrtLlmArgs"), ("tensorrt_llm.llmapi", "LlmArgs"),
    ("tensorrt_llm.llmapi.llm_args", "PeftCacheConfig"),
    ("tensorrt_llm.llmapi", "EagleDecodingConfig"), ("tensorrt_llm.llmapi", "MTPDecodingConfig"),
    ("tensorrt_llm.llmapi", "NGramDecodingConfig"), ("tensorrt_llm.llmapi", "DraftTargetDecodingConfig"),
    ("tensorrt_llm.llmapi", "MedusaDecodingConfig"), ("tensorrt_llm.llmapi", "LookaheadDecodingConfig"),
    ("tensorrt_llm.llmapi", "UserProvidedDecodingConfig"), ("tensorrt_llm.llmapi", "AutoDecodingConfig"),
    ("tensorrt_llm.llmapi", "SaveHiddenStatesDecodingConfig"), ("tensorrt_llm.llmapi", "Eagle3DecodingConfig"),
    ("tensorrt_llm.executor", "CppExecutorError"), ("tensorrt_llm", "__version__"),
]

# §2, §2.1, §10: method parameters, in order.
LLM_INIT = ["model", "tokenizer", "tokenizer_mode", "skip_tokenizer_init", "trust_remote_code", "tensor_parallel_size",
            "dtype", "revision", "tokenizer_revision", "kwargs"]
GENERATE = ["inputs", "sampling_params", "use_tqdm", "lora_request", "prompt_adapter_request",
            "kv_cache_retention_config", "disaggregated_params", "scheduling_params", "cache_salt"]
GENERATE_ASYNC = ["inputs", "sampling_params", "lora_request", "prompt_adapter_request", "streaming",
                  "kv_cache_retention_config", "disaggregated_params", "_postproc_params", "scheduling_params",
                  "cache_salt"]
STABLE_GENERATE_ASYNC = ["inputs", "sampling_params", "lora_request", "prompt_adapter_request", "streaming"]

# §4, §3.2, §7, §9, §8: constructor fields per class (sets: the reference gives no order for these).
SAMPLING_PARAMS = {
    "max_tokens", "min_tokens", "end_id", "pad_id", "stop", "stop_token_ids", "include_stop_str_in_output", "bad",
    "bad_token_ids", "n", "best_of", "use_beam_search", "beam_search_diversity_rate", "length_penalty",
    "early_stopping", "beam_width_array", "temperature", "top_k", "top_p", "top_p_min", "top_p_reset_ids",
    "top_p_decay", "min_p", "seed", "repetition_penalty", "presence_penalty", "frequency_penalty",
    "no_repeat_ngram_size", "logprobs", "prompt_logprobs", "return_context_logits", "return_generation_logits",
    "exclude_input_from_output", "return_encoder_output", "return_perf_metrics", "additional_model_outputs",
    "embedding_bias", "logits_processor", "apply_batched_logits_processor", "lookahead_config", "guided_decoding",
    "ignore_eos", "detokenize", "add_special_tokens", "truncate_prompt_tokens", "skip_special_tokens",
    "spaces_between_special_tokens",
}
GUIDED = {"json", "regex", "grammar", "json_object", "structural_tag"}
COMPLETION_OUTPUT = {"index", "text", "token_ids", "cumulative_logprob", "logprobs", "prompt_logprobs", "finish_reason",
                     "stop_reason", "generation_logits", "additional_context_outputs",
                     "additional_generation_outputs", "disaggregated_params", "request_perf_metrics"}
LORA_REQUEST = ["lora_name", "lora_int_id", "lora_path", "lora_ckpt_source"]
LORA_CONFIG = {"lora_dir", "lora_ckpt_source", "max_lora_rank", "lora_target_modules", "trtllm_modules_to_hf_modules",
               "max_loras", "max_cpu_loras", "swap_gate_up_proj_lora_b_weight"}
KV_CACHE = {"enable_block_reuse", "max_tokens", "free_gpu_memory_fraction", "max_attention_window",
            "sink_token_length", "host_cache_size", "onboard_blocks", "cross_kv_cache_fraction",
            "secondary_offload_min_priority", "event_buffer_max_size", "attention_dp_events_gather_period_ms",
            "enable_partial_reuse", "copy_on_partial_reuse", "use_uvm", "max_gpu_total_bytes", "dtype",
            "mamba_ssm_cache_dtype", "tokens_per_block"}
CUDA_GRAPH = {"batch_sizes", "max_batch_size", "enable_padding"}
DECODING_BASE = {"max_draft_len", "max_total_draft_tokens", "speculative_model_dir", "max_concurrency", "load_format",
                 "acceptance_window", "acceptance_length_threshold"}
SPEC_OWN = {
    "EagleDecodingConfig": {"eagle3_one_model", "eagle3_layers_to_capture", "greedy_sampling", "posterior_threshold",
                            "use_dynamic_tree", "dynamic_tree_max_topK", "eagle_choices", "max_non_leaves_per_layer"},
    "Eagle3DecodingConfig": {"eagle3_model_arch"},
    "MTPDecodingConfig": {"num_nextn_predict_layers", "use_relaxed_acceptance_for_thinking", "relaxed_topk",
                          "relaxed_delta", "use_mtp_vanilla", "mtp_eagle_one_model"},
    "NGramDecodingConfig": {"max_matching_ngram_size", "is_keep_all", "is_use_oldest", "is_public_pool"},
    "DraftTargetDecodingConfig": set(),
    "MedusaDecodingConfig": {"medusa_choices", "num_medusa_heads"},
    "LookaheadDecodingConfig": {"max_window_size", "max_ngram_size", "max_verification_set_size"},
    "UserProvidedDecodingConfig": {"drafter", "resource_manager"},
    "AutoDecodingConfig": set(),
    "SaveHiddenStatesDecodingConfig": {"output_directory", "write_interval", "file_prefix", "eagle3_layers_to_capture"},
}
# §9: LLM arguments the executor passes (TorchLlmArgs / BaseLlmArgs fields).
LLM_ARGS_USED = {"tensor_parallel_size", "pipeline_parallel_size", "dtype", "max_batch_size", "max_num_tokens",
                 "max_seq_len", "kv_cache_config", "cuda_graph_config", "enable_chunked_prefill",
                 "guided_decoding_backend", "speculative_config", "lora_config", "stream_interval",
                 "enable_iter_perf_stats", "num_postprocess_workers", "gather_generation_logits"}
TRT_ONLY = {"enable_tqdm", "workspace", "enable_build_cache", "extended_runtime_perf_knob_config", "calib_config",
            "embedding_parallel_mode", "fast_build", "enable_prompt_adapter", "max_prompt_adapter_token",
            "batching_type", "normalize_log_probs"}


def params(fn: object) -> list[str]:
    return [p for p in inspect.signature(fn).parameters if p != "self"]  # type: ignore[arg-type]


def fields(cls: type) -> set[str]:
    if dataclasses.is_dataclass(cls):
        return {f.name for f in dataclasses.fields(cls) if f.init}
    return set(cls.model_fields)  # type: ignore[attr-defined]


def llmapi(name: str) -> type:
    return getattr(importlib.import_module("tensorrt_llm.llmapi"), name)


@pytest.mark.parametrize(("module", "symbol"), IMPORTS)
def test_import_paths(module: str, symbol: str) -> None:
    assert hasattr(importlib.import_module(module), symbol)


def test_llm_methods() -> None:
    from tensorrt_llm import LLM
    from tensorrt_llm._tensorrt_engine import LLM as TrtLLM

    for cls in (LLM, TrtLLM):
        assert params(cls.__init__) == LLM_INIT
        assert params(cls.generate) == GENERATE
        assert params(cls.generate_async) == GENERATE_ASYNC
        assert params(cls.generate_async)[:5] == STABLE_GENERATE_ASYNC
        assert params(cls.get_stats) == ["timeout"] and params(cls.get_stats_async) == ["timeout"]
        for method in ("shutdown", "__enter__", "__exit__"):
            assert callable(getattr(cls, method))
    assert not inspect.iscoroutinefunction(LLM.generate_async)  # returns a RequestOutput at once


def test_result_classes() -> None:
    from tensorrt_llm.executor.request import LoRARequest
    from tensorrt_llm.executor.result import CompletionOutput
    from tensorrt_llm.llmapi import GuidedDecodingParams, RequestOutput, SamplingParams

    assert fields(SamplingParams) == SAMPLING_PARAMS
    assert fields(GuidedDecodingParams) == GUIDED
    assert fields(CompletionOutput) == COMPLETION_OUTPUT
    for prop in ("text_diff", "token_ids_diff", "logprobs_diff", "length"):
        assert isinstance(getattr(CompletionOutput, prop), property)
    assert params(LoRARequest) == LORA_REQUEST
    for attr in ("abort", "aborted", "aresult", "result", "finished", "outputs", "prompt", "__aiter__"):
        assert hasattr(RequestOutput, attr)
    with pytest.raises(RuntimeError):
        RequestOutput()  # created internally only
    with pytest.raises(TypeError):
        SamplingParams(32)  # type: ignore[misc]  # keyword-only


def test_config_classes() -> None:
    from tensorrt_llm.lora_helper import LoraConfig

    assert fields(LoraConfig) == LORA_CONFIG
    assert fields(llmapi("KvCacheConfig")) == KV_CACHE
    assert fields(llmapi("CudaGraphConfig")) == CUDA_GRAPH
    for name, own in SPEC_OWN.items():
        base = DECODING_BASE | (SPEC_OWN["EagleDecodingConfig"] if name == "Eagle3DecodingConfig" else set())
        extra = {"num_eagle_layers"} if "Eagle" in name else set()  # "also sets num_eagle_layers"
        assert fields(llmapi(name)) - extra == base | own, name
    torch_args, trt_args = llmapi("TorchLlmArgs"), llmapi("TrtLlmArgs")
    assert LLM_ARGS_USED <= fields(torch_args) | {"gather_generation_logits"}
    assert TRT_ONLY <= fields(trt_args) and not TRT_ONLY & fields(torch_args)
    assert llmapi("LlmArgs") is torch_args


def test_documented_behaviours() -> None:
    """A few reference facts the executor depends on, checked on the double itself."""
    from tensorrt_llm.executor.request import LoRARequest
    from tensorrt_llm.llmapi import KvCacheConfig, SamplingParams

    with pytest.raises(ValueError):
        LoRARequest("a", 1, "/does/not/exist")  # §7: __post_init__ checks the path
    with pytest.raises(ValueError):
        KvCacheConfig(not_a_field=1)  # §9: StrictBaseModel
    with pytest.raises(ValueError):
        SamplingParams(best_of=2, temperature=0)  # §4: greedy with best_of > 1
    assert SamplingParams().max_tokens == 32 and SamplingParams(logprobs=True).logprobs == 1
