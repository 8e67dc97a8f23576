"""The FP8 KV cache (`kv_cache_dtype="fp8"`): what it stores, that every attention path reads it the same way, what
it buys, and what it costs a real model.

The cache holds K and V as FP8 E4M3 values, unscaled: each element clamped to +-448 and rounded to nearest even
(`layers.attention.to_cache`). Attention then works on those rounded values everywhere: decodes and prompt chunks
that read the cache, and a fresh prompt, which attends to its own K/V rounded the same way, so a prompt computes
the same whether its prefix came from the prefix cache or not. The kernels' side (the rotary kernel's stores, both
attention kernels over an FP8 cache) is in test_kernels.py; this file runs on the CPU.

What it costs a real model (SmolLM2-135M-Instruct) is tests/golden/test_smollm2_fp8.py. E4M3 keeps 3 mantissa bits:
SmolLM2's K and V round with 2.6 % relative error per tensor, which per-row or per-tensor scales would improve only
to 2.0-2.7 % (measured on its cache), so none are kept.
"""

from __future__ import annotations

import pytest
import torch
from engine_helpers import make_request, run_until_done, tokens_of

from trt_gateway.engine import EngineConfig, LLMEngine
from trt_gateway.engine.engine_config import EngineConfigError
from trt_gateway.engine.forward_batch import Chunk, layout
from trt_gateway.engine.layers.attention import Attention, as_cached, to_cache, write_kv

FP8 = torch.float8_e4m3fn
DEMO = "trt_gateway/assets/demo/target"


def test_the_cache_stores_clamped_values_rounded_to_nearest_even() -> None:
    caches = torch.zeros(2, 3, 4, 1, 8, dtype=FP8)
    k = torch.tensor([[[1.0625, 17.0, 500.0, -1000.0, 0.3, 0.001, -0.0, 241.0]]])  # [T=1, Hkv=1, D=8]
    v = torch.tensor([[[2.0, -2.5, 0.1, 448.0, -449.0, 1e-3, 7.0, 3.0]]])
    write_kv(caches[0], caches[1], k, v, torch.tensor([5]))
    stored_k = caches[0].view(-1, 8)[5].float().tolist()
    assert stored_k == [1.0, 16.0, 448.0, -448.0, 0.3125, 0.001953125, 0.0, 240.0]  # ties to even; saturated
    assert caches[1].view(-1, 8)[5].float().tolist() == [2.0, -2.5, 0.1015625, 448.0, -448.0, 0.001953125, 7.0, 3.0]
    assert caches.float().count_nonzero() == 15  # slot 5 only (one zero stored)
    assert torch.equal(as_cached(k, FP8), caches[0].view(-1, 1, 8)[5:6].float())
    assert to_cache(k, torch.float32) is k  # a cache of the model's dtype stores as is


def _attention_steps(cache_dtype: torch.dtype, kv_round: bool) -> list[torch.Tensor]:
    """Two steps of one attention layer over a paged cache: A and B's fresh prompts, then A decodes while B's next
    chunk attends to its cached prefix. kv_round: feed K/V already rounded to FP8 (the float32 reference)."""
    gen = torch.Generator().manual_seed(3)
    heads, kv_heads, dim, block_size = 4, 2, 16, 4
    attn = Attention(heads, kv_heads, dim)
    attn.bind_cache(*torch.zeros(2, 8, block_size, kv_heads, dim, dtype=cache_dtype))
    tables = {"A": [0, 1, 2], "B": [3, 4, 5]}
    steps = [
        [Chunk(list(range(9)), 0, tables["A"], num_logits=1), Chunk(list(range(5)), 0, tables["B"], num_logits=1)],
        [Chunk([1], 9, tables["A"], num_logits=1), Chunk([2, 3, 4], 5, tables["B"], num_logits=1)],
    ]
    outs = []
    for chunks in steps:
        batch = layout(chunks, block_size, torch.device("cpu"))
        tokens = batch.input_ids.shape[0]
        q = torch.randn(tokens, heads, dim, generator=gen) * 3
        k, v = torch.randn(2, tokens, kv_heads, dim, generator=gen) * 3
        if kv_round:
            k, v = as_cached(k, FP8), as_cached(v, FP8)
        outs.append(attn(q, k, v, batch.meta))
    return outs


def test_attention_over_an_fp8_cache_is_attention_over_the_rounded_kv() -> None:
    """Fresh prompts, a chunk reading its cached prefix and a decode, all on the values the cache holds."""
    got = _attention_steps(FP8, kv_round=False)
    want = _attention_steps(torch.float32, kv_round=True)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-6)
    exact = _attention_steps(torch.float32, kv_round=False)
    assert float((got[1] - exact[1]).abs().max()) > 1e-3  # the rounding is real: not a float32 cache by another name


def test_kv_cache_dtype_is_checked() -> None:
    with pytest.raises(EngineConfigError) as err:
        EngineConfig(model=DEMO, kv_cache_dtype="fp9")
    assert err.value.field == "kv_cache_dtype" and "fp9" in str(err.value)


def test_an_fp8_cache_holds_more_tokens_and_serves_the_engine() -> None:
    """Same byte budget, more blocks; chunked prompts, decodes and a prefix-cache hit give the same tokens as
    recomputing the prefix (the fresh prompt attends to its K/V rounded as the cache holds them)."""
    common = dict(model=DEMO, device="cpu", kv_cache_bytes=4 << 20, max_num_seqs=4, max_num_batched_tokens=32)
    plain = LLMEngine(EngineConfig(**common))
    fp8 = LLMEngine(EngineConfig(**common, kv_cache_dtype="fp8", enable_prefix_caching=True))
    assert fp8.model_runner.kv_cache.dtype == FP8
    assert fp8.num_total_blocks == 4 * plain.num_total_blocks  # a quarter of float32's bytes (half of bfloat16's)
    prompt = list(range(10, 80))  # 70 tokens: three chunks of 32
    fp8.add_request(make_request("first", max_tokens=12), prompt)
    first = tokens_of(run_until_done(fp8)["first"])
    fp8.add_request(make_request("again", max_tokens=12), prompt)  # its full blocks come from the prefix cache
    again = run_until_done(fp8)["again"]
    assert len(first) == 12 and tokens_of(again) == first
    assert again[-1].usage.cached_tokens == 64  # four full blocks of 16 were hits


def test_the_flag_and_the_option_reach_the_engine() -> None:
    from trt_gateway.cli import build_parser, serve_overrides
    from trt_gateway.config import ConfigError, from_mapping
    from trt_gateway.executors.native import DEMO_MODEL, NativeExecutor

    args = build_parser().parse_args(["serve", "--kv-cache-dtype", "fp8"])
    executor = from_mapping(serve_overrides(args)).executor
    assert dict(executor.options) == {"kv_cache_dtype": "fp8"}
    assert NativeExecutor(str(DEMO_MODEL), options=executor.options).engine_config.kv_cache_dtype == "fp8"
    with pytest.raises(ConfigError, match="kv_cache_dtype"):
        NativeExecutor(str(DEMO_MODEL), options={"kv_cache_dtype": "int8"})
