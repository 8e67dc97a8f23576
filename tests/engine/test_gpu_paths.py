"""The CUDA fast paths against the plain ones, on the GPU: Triton kernels vs the torch paths, CUDA-graph replays vs
eager steps (padding rows included), dummy weights and the KV cache sized from free memory. Without a GPU only the
device-independent parts run (bucket choice, dummy weights on the CPU).

Graphed and eager steps run the same kernels on the same shapes except the padded batch, so in float32 they agree
to 1e-4 in logprobs; the kernels vs torch comparison is float32 as well (tolerance 2e-3: TF32 dots in the kernels).
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from engine_helpers import make_engine, make_request, needs_cuda, prompts, run_until_done, tokens_of

from trt_gateway.engine import EngineConfig, LLMEngine
from trt_gateway.engine.cuda_graphs import batch_buckets
from trt_gateway.engine.kv_cache import activation_bytes


def test_buckets_cover_every_batch_size():
    for max_batch in (1, 3, 8, 100, 512, 600):
        buckets = batch_buckets(max_batch)
        assert buckets == sorted(set(buckets)) and buckets[0] == 1 and buckets[-1] == max_batch
        for n in range(1, max_batch + 1):
            b = next(s for s in buckets if s >= n)
            assert b - n <= max(8, n // 4), (max_batch, n, b)  # padding stays a small fraction


def _tiny_config(tmp_path, **extra):
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 512,
        "max_position_embeddings": 512,
        "eos_token_id": 2,
        **extra,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return str(tmp_path)


def test_one_row_gemv_only_where_graphs_are_captured(monkeypatch):
    """The Triton GEMV replaces cuBLAS for one-row projections only inside `one_row_gemv()` (the graphs' warm-up and
    capture): eager batch-1 steps are launch-bound, and a Triton launch costs more host time than a cuBLAS one."""
    pytest.importorskip("triton")
    from trt_gateway.engine.kernels import gemv as gemv_module
    from trt_gateway.engine.layers.linear import Linear, one_row_gemv

    calls = []
    monkeypatch.setattr(gemv_module, "gemv", lambda x, w, b=None: calls.append(tuple(x.shape)) or F.linear(x, w, b))
    layer = Linear(8, 4)
    layer.weight = torch.nn.Parameter(torch.randn(4, 8), requires_grad=False)
    layer.use_kernels = True
    one, two = torch.randn(1, 8), torch.randn(2, 8)
    layer(one)
    assert calls == []  # eager
    with one_row_gemv():
        assert torch.allclose(layer(one), F.linear(one, layer.weight))
        layer(two)  # two rows: cuBLAS
    assert calls == [(1, 8)]
    layer(one)  # the block has ended
    layer.use_kernels = False
    with one_row_gemv():
        layer(one)  # kernels off
    assert calls == [(1, 8)]


def test_dummy_weights_build_from_config_alone(tmp_path):
    engine = LLMEngine(EngineConfig(model=_tiny_config(tmp_path), load_format="dummy", device="cpu"))
    up = engine.model_runner.model.model.layers[0].mlp.up_proj.weight
    assert abs(float(up.std()) - 0.02) < 0.002
    assert float(engine.model_runner.model.model.norm.weight.min()) == 1.0
    engine.add_request(make_request("a", max_tokens=5, stopping={"ignore_eos": True}), [5, 6, 7])
    assert len(tokens_of(run_until_done(engine)["a"])) == 5


def test_fused_projections_share_storage(llama):
    engine = make_engine(llama.path)
    attn = engine.model_runner.model.model.layers[0].self_attn
    assert attn.qkv is not None
    fused = attn.qkv.weight
    for part in (attn.q_proj, attn.k_proj, attn.v_proj):
        assert part.weight.untyped_storage().data_ptr() == fused.untyped_storage().data_ptr()


def _compare(a, b, atol):
    assert a.keys() == b.keys()
    for rid in a:
        assert tokens_of(a[rid]) == tokens_of(b[rid]), rid
        la = torch.tensor([lp.logprob for out in a[rid] for lp in out.logprobs])
        lb = torch.tensor([lp.logprob for out in b[rid] for lp in out.logprobs])
        worst = float((la - lb).abs().max())
        print(f"{rid}: max |logprob diff| {worst:.3g}")
        assert worst <= atol, (rid, worst)


@needs_cuda
def test_graph_replays_match_eager_steps(llama):
    request_prompts = dict(zip("abcde", prompts(5, [3, 9, 17, 30, 5], seed=7), strict=True))
    graphed = make_engine(llama.path, device="cuda", dtype="float32")
    assert graphed.model_runner.graphs is not None and graphed.model_runner.graphs.graphs
    eager = make_engine(llama.path, device="cuda", dtype="float32", cuda_graph_max_batch=0)
    assert eager.model_runner.graphs is None
    got = _run_staggered(graphed, request_prompts)
    want = _run_staggered(eager, request_prompts)
    _compare(got, want, 1e-4)
    assert graphed.num_free_blocks == graphed.num_total_blocks


@needs_cuda
def test_graphs_share_one_logits_buffer_the_kv_budget_counts(llama):
    """Every bucket's graph writes its logits into one [max_batch, V] buffer, and that is what the activation
    estimate reserves: per-bucket outputs would sum over all buckets and go uncounted."""
    engine = make_engine(llama.path, device="cuda", dtype="float32", max_num_seqs=64)
    graphs = engine.model_runner.graphs
    assert graphs is not None and graphs.max_batch == 64 and len(graphs.graphs) == len(batch_buckets(64)) > 1
    vocab = engine.model_config.vocab_size
    assert graphs.logits.shape == (64, vocab) and graphs.logits.dtype == torch.float32
    config = engine.config
    counted = activation_bytes(config, engine.model_config, engine.dtype, 64, gathers_kv=False) - activation_bytes(
        dataclasses.replace(config, cuda_graph_max_batch=0), engine.model_config, engine.dtype, 64, gathers_kv=False
    )
    assert counted == graphs.logits.numel() * graphs.logits.element_size()


def _run_staggered(engine, request_prompts):
    """Different max_tokens, so the running batch shrinks step by step (buckets 8, 4, 2, 1 with padding rows)."""
    for i, (rid, prompt) in enumerate(request_prompts.items()):
        engine.add_request(make_request(rid, max_tokens=8 + 5 * i, logprobs=True, top_logprobs=3), prompt)
    return run_until_done(engine)


@needs_cuda
def test_kernels_match_the_torch_paths(checkpoints):
    for kind in ("llama", "llama3_gqa", "qwen2"):
        ckpt = checkpoints[kind]
        request_prompts = dict(zip("abcd", prompts(4, [2, 11, 25, 40], seed=8), strict=True))
        fast = make_engine(ckpt.path, device="cuda", dtype="float32")
        assert fast.use_kernels
        plain = make_engine(ckpt.path, device="cuda", dtype="float32", kernels=False)
        assert not plain.use_kernels and plain.model_runner.graphs is None
        _compare(_run_staggered(fast, request_prompts), _run_staggered(plain, request_prompts), 2e-3)


@needs_cuda
def test_an_fp8_kv_cache_reads_the_same_through_kernels_graphs_and_torch(llama):
    """kv_cache_dtype="fp8": the rotary kernel's stores, the attention kernels and the graphs against the torch
    paths over the same FP8 cache (both attend over the rounded values, so only summation order differs)."""
    request_prompts = dict(zip("abcd", prompts(4, [2, 11, 25, 40], seed=9), strict=True))
    fast = make_engine(llama.path, device="cuda", dtype="float32", kv_cache_dtype="fp8")
    assert fast.use_kernels and fast.model_runner.graphs is not None
    assert fast.model_runner.kv_cache.dtype == torch.float8_e4m3fn
    plain = make_engine(llama.path, device="cuda", dtype="float32", kernels=False, kv_cache_dtype="fp8")
    _compare(_run_staggered(fast, request_prompts), _run_staggered(plain, request_prompts), 2e-3)


@needs_cuda
def test_dummy_8b_shaped_layer_runs_and_kv_comes_from_free_memory(tmp_path):
    # Llama-3-8B's layer shapes (GQA 32/8, head_dim 128, FFN 14336) with 2 layers and a small vocabulary.
    path = _tiny_config(
        tmp_path,
        hidden_size=4096,
        intermediate_size=14336,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=32000,
        max_position_embeddings=2048,
    )
    engine = LLMEngine(
        EngineConfig(
            model=path,
            load_format="dummy",
            device="cuda",
            dtype="bfloat16",
            max_num_seqs=64,
            gpu_memory_utilization=0.5,
        )
    )
    free, total = torch.cuda.mem_get_info()
    assert engine.num_total_blocks * 16 >= 64 * 2048  # sized from GPU memory, not the CPU default
    request_prompts = dict(zip("abc", prompts(3, [100, 7, 300], seed=9), strict=True))
    for rid, prompt in request_prompts.items():
        engine.add_request(make_request(rid, max_tokens=12, stopping={"ignore_eos": True}), prompt)
    outputs = run_until_done(engine)
    assert all(len(tokens_of(outputs[rid])) == 12 for rid in request_prompts)
    assert free > 0 and total > 0


def test_batch_limits_default_per_device():
    config = EngineConfig(model="x")
    assert (config.max_num_seqs, config.max_num_batched_tokens) == (0, 0)  # 0: the device decides
    cpu, cuda = config.for_device("cpu"), config.for_device("cuda")
    assert (cpu.max_num_seqs, cpu.max_num_batched_tokens) == (16, 2048)
    assert (cuda.max_num_seqs, cuda.max_num_batched_tokens) == (256, 8192)
    mine = EngineConfig(model="x", max_num_seqs=3).for_device("cuda")
    assert (mine.max_num_seqs, mine.max_num_batched_tokens) == (3, 8192)


def test_kernels_only_where_they_apply():
    from trt_gateway.engine.loader import kernels_usable
    from trt_gateway.engine.model_config import parse_model_config

    def cfg(head_dim):
        return parse_model_config(
            {
                "architectures": ["LlamaForCausalLM"],
                "hidden_size": 8 * head_dim,
                "intermediate_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 8,
                "vocab_size": 64,
                "max_position_embeddings": 64,
            }
        )

    assert not kernels_usable(torch.device("cpu"), cfg(128))
    cuda = torch.device("cuda")
    assert not kernels_usable(cuda, cfg(80)) and not kernels_usable(cuda, cfg(8))  # the torch paths serve these
    assert not kernels_usable(cuda, cfg(256))  # Gemma's head size: never run through the kernels' tiles on a GPU
    from trt_gateway.engine import kernels

    assert kernels_usable(cuda, cfg(128)) == kernels.available()
