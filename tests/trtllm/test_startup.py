"""Options, LLM construction and start-up errors: each bad input fails early with a ConfigError naming the key."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from trtllm_helpers import executor_config, started, write_adapter

from trt_gateway.config import ConfigError
from trt_gateway.executors import registry
from trt_gateway.executors.trtllm import TrtllmExecutor
from trt_gateway.executors.trtllm.options import TrtllmOptions


def build(model: str, **kwargs: Any) -> TrtllmExecutor:
    return TrtllmExecutor.from_config(executor_config(model, **kwargs))


def test_registry_creates_it(model_dir: str) -> None:
    executor = registry.create(executor_config(model_dir))
    assert isinstance(executor, TrtllmExecutor)
    assert executor.llm_kwargs["model"] == model_dir
    assert executor.llm_kwargs["enable_iter_perf_stats"] is True  # needed for PyTorch-backend stats


def test_tensorrt_llm_missing_gives_install_hint(model_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)  # import raises ImportError
    with pytest.raises(ConfigError, match=r"TensorRT-LLM.*pip install 'trt-gateway\[trtllm\]'.*docs/trtllm.md"):
        build(model_dir)


@pytest.mark.parametrize("model", ["", "/no/such/dir", "./relative/missing"])
def test_bad_model_path(model: str) -> None:
    with pytest.raises(ConfigError, match="executor.model"):
        build(model)


def test_hf_repo_id_is_passed_through() -> None:
    assert build("meta-llama/Llama-3.1-8B-Instruct").llm_kwargs["model"] == "meta-llama/Llama-3.1-8B-Instruct"


async def test_model_that_fails_to_load_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    executor = build(str(tmp_path / "empty"))  # exists, but the double finds no config.json
    with pytest.raises(ConfigError, match="TensorRT-LLM could not load .*config.json"):
        await executor.start()


async def test_engine_init_error_is_a_config_error(model_dir: str, control: Any) -> None:
    control.init_error = RuntimeError("CUDA out of memory")
    with pytest.raises(ConfigError, match="RuntimeError: CUDA out of memory"):
        await build(model_dir).start()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bogus": 1}, "executor.options.bogus: unknown trtllm option"),
        ({"backend": "onnx"}, "backend must be one of"),
        ({"tensor_parallel_size": 0}, "tensor_parallel_size must be >= 1"),
        ({"max_batch_size": "8"}, "max_batch_size must be int"),
        ({"trust_remote_code": 1}, "trust_remote_code must be bool"),
        ({"kv_cache_config": {"free_gpu_memory_fraction": 1.5}}, "kv_cache_config: KvCacheConfig"),
        ({"kv_cache_config": {"no_such": 1}}, "kv_cache_config.no_such: KvCacheConfig has no such field"),
        ({"cuda_graph_config": {"max_batch_size": "x"}}, "cuda_graph_config: CudaGraphConfig"),
        ({"cuda_graph_config": "on"}, "cuda_graph_config must be a table, null"),
        ({"backend": "tensorrt", "cuda_graph_config": None}, "PyTorch-backend setting"),
        ({"backend": "tensorrt", "stream_interval": 4}, "PyTorch-backend setting"),
        ({"guided_decoding_backend": "outlines"}, "guided_decoding_backend must be one of"),
        ({"backend": "tensorrt", "guided_decoding_backend": "llguidance"}, "llguidance needs backend 'pytorch'"),
        ({"lora_target_modules": ["q_proj"]}, "lora_target_modules: unknown module 'q_proj'"),
        ({"extra_llm_args": {"num_postprocess_workers": 2}}, "must stay 0"),
        ({"extra_llm_args": {"skip_tokenizer_init": True}}, "needs the tokenizer"),
        ({"extra_llm_args": {"max_batch_size": 8}}, "set it as a trtllm option"),
        ({"extra_llm_args": {"not_an_llm_arg": 1}}, "has no LLM argument 'not_an_llm_arg'"),
        ({"extra_llm_args": {"enable_tqdm": True}}, "has no LLM argument 'enable_tqdm'"),  # TRT-only on PyTorch
    ],
)
def test_bad_options(model_dir: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(model_dir, options=options)


def test_options_reach_the_llm(model_dir: str) -> None:
    kw = build(model_dir, options={
        "tensor_parallel_size": 2, "pipeline_parallel_size": 2, "max_batch_size": 64, "max_num_tokens": 4096,
        "max_seq_len": 2048, "dtype": "bfloat16", "enable_chunked_prefill": True, "stream_interval": 2,
        "guided_decoding_backend": "xgrammar", "kv_cache_config": {"free_gpu_memory_fraction": 0.8},
        "cuda_graph_config": {"batch_sizes": [1, 2, 4]}, "extra_llm_args": {"print_iter_log": True},
    }).llm_kwargs
    assert kw["tensor_parallel_size"] == 2 and kw["pipeline_parallel_size"] == 2
    assert (kw["max_batch_size"], kw["max_num_tokens"], kw["max_seq_len"]) == (64, 4096, 2048)
    assert kw["kv_cache_config"].free_gpu_memory_fraction == 0.8
    assert kw["cuda_graph_config"].batch_sizes == [1, 2, 4]
    assert kw["print_iter_log"] is True and kw["stream_interval"] == 2 and kw["dtype"] == "bfloat16"


async def test_tensorrt_backend_uses_the_engine_llm(model_dir: str, control: Any) -> None:
    from tensorrt_llm._tensorrt_engine import LLM as TrtLLM

    executor = await started(model_dir, options={"backend": "tensorrt", "extra_llm_args": {"enable_tqdm": False}})
    assert type(executor.llm) is TrtLLM
    assert executor.models()[0].capabilities.logprobs is False  # TRT logprobs need gather_generation_logits
    executor2 = await started(model_dir, options={"backend": "tensorrt", "gather_generation_logits": True})
    assert executor2.models()[0].capabilities.logprobs is True


def test_options_parse_defaults() -> None:
    opts = TrtllmOptions.parse({})
    assert opts.backend == "pytorch" and opts.tensor_parallel_size == 1 and opts.stats_interval_s == 1.0


# -- LoRA limits ---------------------------------------------------------------------------------------------------


def lora(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    root = tmp_path / "adapters"
    write_adapter(root, "sql", modules=("q_proj", "v_proj", "o_proj"))
    return {"adapter_roots": [str(root)], "adapters": {"sql": "sql"}, **extra}


def test_lora_config_from_gateway_config(model_dir: str, tmp_path: Path) -> None:
    kw = build(model_dir, lora=lora(tmp_path, max_loras=4, max_cpu_loras=16, max_lora_rank=32)).llm_kwargs
    cfg = kw["lora_config"]
    assert (cfg.max_loras, cfg.max_cpu_loras, cfg.max_lora_rank, cfg.lora_dir) == (4, 16, 32, [])
    assert cfg.lora_target_modules == ["attn_dense", "attn_q", "attn_v"]  # from the preloaded adapter's HF names
    assert kw["cuda_graph_config"] is None  # LoRA + CUDA graphs: off by default (1.0/1.1 limit)


def test_lora_target_modules_option_wins(model_dir: str, tmp_path: Path) -> None:
    kw = build(model_dir, lora=lora(tmp_path), options={"lora_target_modules": ["attn_qkv"]}).llm_kwargs
    assert kw["lora_config"].lora_target_modules == ["attn_qkv"]


def test_lora_with_explicit_cuda_graphs_is_refused(model_dir: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="LoRA outputs are wrong under CUDA graphs.*allow_lora_cuda_graphs"):
        build(model_dir, lora=lora(tmp_path), options={"cuda_graph_config": {"max_batch_size": 8}})
    kw = build(model_dir, lora=lora(tmp_path),
               options={"cuda_graph_config": {"max_batch_size": 8}, "allow_lora_cuda_graphs": True}).llm_kwargs
    assert kw["cuda_graph_config"].max_batch_size == 8


def test_lora_with_speculation_is_refused(model_dir: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="LoRA adapters cannot be combined with speculative decoding"):
        build(model_dir, lora=lora(tmp_path), speculative={"mode": "ngram"})
    kw = build(model_dir, lora=lora(tmp_path), speculative={"mode": "ngram"},
               options={"allow_lora_speculation": True}).llm_kwargs
    assert kw["speculative_config"] is not None and kw["lora_config"] is not None


def test_tensorrt_backend_lora_sets_enable_lora(model_dir: str, tmp_path: Path) -> None:
    kw = build(model_dir, lora=lora(tmp_path), options={"backend": "tensorrt"}).llm_kwargs
    assert kw["enable_lora"] is True and "cuda_graph_config" not in kw


def test_preloaded_adapter_without_weights_fails_at_config(model_dir: str, tmp_path: Path) -> None:
    root = tmp_path / "adapters"
    write_adapter(root, "broken", weights=False)
    with pytest.raises(ConfigError, match="adapters.broken.*adapter_model"):
        build(model_dir, lora={"adapter_roots": [str(root)], "adapters": {"broken": "broken"}})
