"""Every Triton kernel of `trt_gateway.engine.kernels` against its torch reference in `engine/layers/`.

Without a GPU the kernels run in Triton's interpreter (numpy on the CPU): correctness only, on small shapes, so the
whole child run stays well under a minute on two cores. Speed belongs to GPU benchmarks, never here. With CUDA the
same tests run directly, with bfloat16 as the half dtype (numpy, hence the interpreter, has no bfloat16).

Tolerances (stated once, used below):
- attention: float32 within 1e-5 (abs and rel) of the torch path on the same inputs; half precision within 2e-3
  (fp16) / 1.6e-2 (bf16, 8x fp16's ulp) of the torch path run in float32 on the same half inputs;
- RMSNorm: float32 within 1e-6 relative (only the order of the mean's sum differs); half at most 1 ulp apart, and the
  fused residual sum bit-identical;
- rotary: bit-identical in every dtype, and so is what it stores into the KV cache (against `write_kv`);
- GEMV: half within 1 ulp of the float64 product rounded to half (one rounding of a float32 sum); float32 within 1e-3
  of float64 (sums of ~1,000 products of magnitude ~1, in another order);
- FP8 GEMV: within 1 ulp of the float64 product of the dequantized weights, rounded to half;
- SwiGLU: half at most 1 ulp apart; float32 at most 4 ulps in the interpreter (numpy's exp, not torch's; torch's own
  CPU silu is up to 2 ulps off the float64 value), exact on CUDA (libdevice expf, as torch).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")

from trt_gateway.engine.kernels import available  # noqa: E402
from trt_gateway.engine.kernels.activation import silu_and_mul  # noqa: E402
from trt_gateway.engine.kernels.fp8_gemv import fp8_gemv  # noqa: E402
from trt_gateway.engine.kernels.gemv import gemv  # noqa: E402
from trt_gateway.engine.kernels.paged_decode import paged_decode_attention  # noqa: E402
from trt_gateway.engine.kernels.paged_prefill import paged_prefill_attention  # noqa: E402
from trt_gateway.engine.kernels.rmsnorm import add_rms_norm, rms_norm  # noqa: E402
from trt_gateway.engine.kernels.rotary_store import KVWrite, apply_rotary_  # noqa: E402
from trt_gateway.engine.layers import activation as torch_activation  # noqa: E402
from trt_gateway.engine.layers.attention import (  # noqa: E402
    PrefillSpan,
    decode_attention,
    prefill_attention,
    write_kv,
)
from trt_gateway.engine.layers.norm import RMSNorm  # noqa: E402
from trt_gateway.engine.layers.rotary import RotaryEmbedding  # noqa: E402
from trt_gateway.engine.model_config import RopeConfig  # noqa: E402

# Triton decides at import time whether kernels (and its own helpers) are interpreted, and other tests import it
# first (xgrammar does), so on a machine without a GPU the kernel tests run in one child process started with
# TRITON_INTERPRET=1.
CHILD = os.environ.get("TRITON_INTERPRET") == "1"
CUDA = torch.cuda.is_available() and not CHILD
DIRECT = CUDA or CHILD
DEVICE = "cuda" if CUDA else "cpu"
HALF = torch.bfloat16 if CUDA else torch.float16
HALF_ATTN_TOL = 1.6e-2 if HALF == torch.bfloat16 else 2e-3
SILU_FP32_ULPS = 0 if CUDA else 4  # see the module docstring
direct = pytest.mark.skipif(not DIRECT, reason="runs in the interpreter child (test_in_the_triton_interpreter)")

# How many tests the child must pass: a child that silently skips or collects nothing cannot pass the wrapper.
# Update it when adding a case.
KERNEL_CASES = 50


@pytest.mark.skipif(DIRECT, reason="the kernel tests run directly")
def test_in_the_triton_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__))],
        env=env,
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) == KERNEL_CASES, summary  # every kernel case ran (the wrapper skipped)


def test_available():
    assert available()


# ---------------------------------------------------------------------------------------------------------- helpers


def ulp_distance(a: torch.Tensor, b: torch.Tensor) -> int:
    """Largest distance in units in the last place between two float tensors of one dtype (0 == bit-identical)."""
    assert a.dtype == b.dtype and a.shape == b.shape
    int_type = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}[a.dtype]
    sign_bit = torch.iinfo(int_type).max  # the magnitude mask

    def ordered(x: torch.Tensor) -> torch.Tensor:
        bits = x.contiguous().view(int_type).long()
        magnitude = bits & sign_bit
        return torch.where(bits < 0, -magnitude, magnitude)

    assert not (a.isnan().any() or b.isnan().any())
    return int((ordered(a) - ordered(b)).abs().max()) if a.numel() else 0


def scattered_cache(gen, num_blocks: int, block_size: int, kv_heads: int, head_dim: int, dtype):
    k_cache = torch.randn(num_blocks, block_size, kv_heads, head_dim, generator=gen).to(DEVICE, dtype)
    v_cache = torch.randn(num_blocks, block_size, kv_heads, head_dim, generator=gen).to(DEVICE, dtype)
    return k_cache, v_cache


def block_tables_for(gen, context_lens: list[int], block_size: int, num_blocks: int, extra_width: int):
    """Rows of a random permutation of the blocks (as after churn), padded with random valid ids to a width
    `extra_width` beyond the longest row: the kernels must read only the entries they need."""
    perm = torch.randperm(num_blocks, generator=gen).tolist()
    width = max(-(-n // block_size) for n in context_lens) + extra_width
    rows, used = [], 0
    for n in context_lens:
        need = -(-n // block_size)
        pad = torch.randint(0, num_blocks, (width - need,), generator=gen).tolist()
        rows.append(perm[used : used + need] + pad)
        used += need
    return rows


# ----------------------------------------------------------------------------------------------------------- decode


def decode_case(gen, heads, kv_heads, head_dim, block_size, lens, dtype, index_dtype=torch.int64):
    num_blocks = sum(-(-n // block_size) for n in lens) + 3
    k_cache, v_cache = scattered_cache(gen, num_blocks, block_size, kv_heads, head_dim, dtype)
    tables = block_tables_for(gen, [max(n, 1) for n in lens], block_size, num_blocks, extra_width=3)
    q = torch.randn(len(lens), heads, head_dim, generator=gen).to(DEVICE, dtype)
    tables_t = torch.tensor(tables, device=DEVICE, dtype=index_dtype)
    return q, k_cache, v_cache, tables_t, torch.tensor(lens, device=DEVICE, dtype=index_dtype)


@direct
@pytest.mark.parametrize(
    "heads, kv_heads, head_dim, block_size, num_splits, index_dtype",
    [
        (4, 4, 32, 4, 1, torch.int64),
        (8, 2, 32, 16, 1, torch.int32),
        (8, 1, 64, 16, 4, torch.int64),
        (6, 1, 16, 5, 2, torch.int32),
        (4, 2, 32, 16, 8, torch.int32),
    ],
    ids=["mha", "gqa4-int32", "gqa8-split4", "mqa6-bs5-split2", "gqa2-split8"],
)
def test_decode_matches_the_torch_path(heads, kv_heads, head_dim, block_size, num_splits, index_dtype):
    gen = torch.Generator().manual_seed(heads * 100 + kv_heads * 10 + block_size + num_splits)
    lens = [1, 5, 17, 64, 70]
    q, k, v, tables, ctx = decode_case(gen, heads, kv_heads, head_dim, block_size, lens, torch.float32, index_dtype)
    scale = head_dim**-0.5
    want = decode_attention(q, k, v, tables.long(), ctx.long(), scale)
    out = torch.full_like(q, float("nan"))
    got = paged_decode_attention(q, k, v, tables, ctx, scale, out, block_n=16, num_splits=num_splits)
    assert got is out
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@direct
@pytest.mark.parametrize("num_splits", [1, 4])
def test_decode_half_precision(num_splits):
    gen = torch.Generator().manual_seed(7 + num_splits)
    q, k, v, tables, ctx = decode_case(gen, 8, 2, 32, 16, [3, 40, 129], HALF)
    want = decode_attention(q.float(), k.float(), v.float(), tables, ctx, 32**-0.5)
    got = paged_decode_attention(q, k, v, tables, ctx, 32**-0.5, block_n=16, num_splits=num_splits)
    assert got.dtype == HALF
    torch.testing.assert_close(got.float(), want, atol=HALF_ATTN_TOL, rtol=HALF_ATTN_TOL)


@direct
def test_decode_strided_q_and_empty_context():
    """q as a view with a token stride (e.g. out of a fused qkv output); a context of 0 (a CUDA-graph padding row)
    gives zeros in both the plain and the split kernel."""
    gen = torch.Generator().manual_seed(11)
    q, k, v, tables, ctx = decode_case(gen, 8, 2, 32, 8, [9, 0, 33], torch.float32)
    wide = torch.randn(3, 8 * 32 + 40, generator=gen).to(DEVICE)
    wide[:, : 8 * 32] = q.reshape(3, -1)
    q_view = wide[:, : 8 * 32].view(3, 8, 32)
    for splits in (1, 2):
        got = paged_decode_attention(
            q_view, k, v, tables, ctx, 0.3, torch.full_like(q, float("nan")), num_splits=splits
        )
        keep = ctx > 0
        want = decode_attention(q[keep], k, v, tables[keep], ctx[keep], 0.3)
        torch.testing.assert_close(got[keep], want, atol=1e-5, rtol=1e-5)
        assert torch.equal(got[1], torch.zeros_like(got[1]))


@direct
@pytest.mark.parametrize("num_splits", [1, 4])
def test_decode_sliding_window_matches_the_torch_path(num_splits):
    """Only the last `window` keys of each context: shorter, equal and longer contexts, split or not."""
    gen = torch.Generator().manual_seed(21 + num_splits)
    q, k, v, tables, ctx = decode_case(gen, 8, 2, 32, 4, [1, 9, 20, 21, 70], torch.float32)
    want = decode_attention(q, k, v, tables, ctx, 0.2, window=20)
    assert not torch.allclose(want[-1], decode_attention(q, k, v, tables, ctx, 0.2)[-1])  # the window matters
    got = paged_decode_attention(q, k, v, tables, ctx, 0.2, block_n=16, num_splits=num_splits, window=20)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@direct
def test_decode_edge_cases():
    gen = torch.Generator().manual_seed(3)
    q, k, v, tables, ctx = decode_case(gen, 4, 2, 32, 16, [4], torch.float32)
    empty = paged_decode_attention(q[:0], k, v, tables[:0], ctx[:0], 0.1)
    assert empty.shape == (0, 4, 32)
    with pytest.raises(ValueError, match="power of two"):
        paged_decode_attention(q[..., :24], k[..., :24], v[..., :24], tables, ctx, 0.1)


# ---------------------------------------------------------------------------------------------------------- prefill


def prefill_case(gen, heads, kv_heads, head_dim, block_size, chunks, dtype):
    """chunks: (tokens cached before, tokens in the chunk) per sequence."""
    lens = [cached + n for cached, n in chunks]
    num_blocks = sum(-(-n // block_size) for n in lens) + 2
    k_cache, v_cache = scattered_cache(gen, num_blocks, block_size, kv_heads, head_dim, dtype)
    tables = torch.tensor(block_tables_for(gen, lens, block_size, num_blocks, extra_width=2), device=DEVICE)
    total = sum(n for _, n in chunks)
    q = torch.randn(total, heads, head_dim, generator=gen).to(DEVICE, dtype)
    starts = [0]
    for _, n in chunks:
        starts.append(starts[-1] + n)
    query_start = torch.tensor(starts, device=DEVICE, dtype=torch.int32)
    return q, k_cache, v_cache, tables, query_start, torch.tensor(lens, device=DEVICE)


def prefill_reference(q, k_cache, v_cache, tables, chunks, scale, window=None):
    """The torch path, chunk by chunk. A fresh prompt (nothing cached) goes through its own causal branch, fed the
    chunk's K/V as the caller would (the same rows that sit in the cache)."""
    block_size = k_cache.shape[1]
    outs, start = [], 0
    for i, (cached, n) in enumerate(chunks):
        ctx = cached + n
        rows = slice(start, start + n)
        table = tables[i, : -(-ctx // block_size)]
        if cached == 0:
            k = k_cache[table].flatten(0, 1)[:ctx]
            v = v_cache[table].flatten(0, 1)[:ctx]
            span = PrefillSpan(start, n, ctx, None)
            outs.append(prefill_attention(q[rows], k, v, k_cache, v_cache, span, scale, window))
        else:
            span = PrefillSpan(start, n, ctx, table)
            outs.append(prefill_attention(q[rows], None, None, k_cache, v_cache, span, scale, window))
        start += n
    return torch.cat(outs)


MIXED = [(0, 37), (40, 24), (150, 3), (77, 1), (0, 1), (5, 12)]  # fresh, chunked, spec verify, 1-token chunks


@direct
@pytest.mark.parametrize(
    "heads, kv_heads, head_dim, block_size, block_m",
    [
        (2, 2, 32, 16, None),
        (4, 2, 32, 16, 8),
        (8, 2, 64, 16, None),
        (8, 1, 32, 5, 2),
        (6, 2, 16, 8, 4),
    ],
    ids=["group1", "group2-bm8", "group4-d64", "group8-bs5", "group3-bs8"],
)
def test_prefill_matches_the_torch_path(heads, kv_heads, head_dim, block_size, block_m):
    gen = torch.Generator().manual_seed(heads * 100 + kv_heads * 10 + block_size)
    q, k, v, tables, query_start, ctx = prefill_case(gen, heads, kv_heads, head_dim, block_size, MIXED, torch.float32)
    scale = head_dim**-0.5
    want = prefill_reference(q, k, v, tables, MIXED, scale)
    out = torch.full_like(q, float("nan"))
    max_len = max(n for _, n in MIXED)
    got = paged_prefill_attention(q, k, v, tables, query_start, ctx, max_len, scale, out, block_m=block_m, block_n=16)
    assert got is out
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@direct
def test_prefill_upper_bound_query_len_int32_tables_and_strided_q():
    """max_query_len only bounds the grid (as under a CUDA graph); int32 indices; q a view with a token stride."""
    gen = torch.Generator().manual_seed(5)
    chunks = [(0, 20), (33, 2), (0, 1)]
    q, k, v, tables, query_start, ctx = prefill_case(gen, 4, 1, 32, 16, chunks, torch.float32)
    wide = torch.randn(q.shape[0], 4 * 32 + 16, generator=gen).to(DEVICE)
    wide[:, : 4 * 32] = q.reshape(q.shape[0], -1)
    q_view = wide[:, : 4 * 32].view(q.shape)
    got = paged_prefill_attention(q_view, k, v, tables.int(), query_start, ctx.int(), 64, 0.2, block_n=64)
    torch.testing.assert_close(got, prefill_reference(q, k, v, tables, chunks, 0.2), atol=1e-5, rtol=1e-5)


@direct
def test_prefill_half_precision():
    gen = torch.Generator().manual_seed(9)
    chunks = [(0, 19), (70, 9), (31, 1)]
    q, k, v, tables, query_start, ctx = prefill_case(gen, 8, 2, 32, 16, chunks, HALF)
    want = prefill_reference(q.float(), k.float(), v.float(), tables, chunks, 32**-0.5)
    got = paged_prefill_attention(q, k, v, tables, query_start, ctx, 19, 32**-0.5, block_n=16)
    assert got.dtype == HALF
    torch.testing.assert_close(got.float(), want, atol=HALF_ATTN_TOL, rtol=HALF_ATTN_TOL)


@direct
@pytest.mark.parametrize("window, block_m", [(7, 4), (20, None)])
def test_prefill_sliding_window_matches_the_torch_path(window, block_m):
    """Windows shorter than a key tile and longer than one, over fresh prompts, chunks after a cache and 1-token
    chunks: rows whose window starts past a whole tile must not turn NaN."""
    gen = torch.Generator().manual_seed(window)
    q, k, v, tables, query_start, ctx = prefill_case(gen, 8, 2, 32, 4, MIXED, torch.float32)
    want = prefill_reference(q, k, v, tables, MIXED, 0.2, window=window)
    max_len = max(n for _, n in MIXED)
    got = paged_prefill_attention(
        q, k, v, tables, query_start, ctx, max_len, 0.2, block_m=block_m, block_n=16, window=window
    )
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@direct
def test_prefill_edge_cases():
    gen = torch.Generator().manual_seed(4)
    q, k, v, tables, query_start, ctx = prefill_case(gen, 4, 2, 32, 16, [(0, 3)], torch.float32)
    empty = paged_prefill_attention(q[:0], k, v, tables[:0], query_start[:1] * 0, ctx[:0], 0, 0.1)
    assert empty.shape == (0, 4, 32)
    with pytest.raises(ValueError, match="power of two"):
        paged_prefill_attention(q[..., :24], k[..., :24], v[..., :24], tables, query_start, ctx, 3, 0.1)


# ---------------------------------------------------------------------------------------------------------- rmsnorm


def norm_module(weight: torch.Tensor, eps: float) -> RMSNorm:
    module = RMSNorm(weight.shape[0], eps)
    module.weight.data = weight
    return module


@direct
@pytest.mark.parametrize("hidden", [256, 100])
def test_rms_norm_float32(hidden):
    gen = torch.Generator().manual_seed(hidden)
    x = (torch.randn(6, hidden, generator=gen) * 3).to(DEVICE)
    weight = torch.randn(hidden, generator=gen).to(DEVICE)
    want = norm_module(weight, 1e-5)(x)
    out = torch.full_like(x, float("nan"))
    assert rms_norm(x, weight, 1e-5, out) is out
    torch.testing.assert_close(out, want, atol=0.0, rtol=1e-6)


@direct
def test_rms_norm_half_within_one_ulp_and_strided_rows():
    gen = torch.Generator().manual_seed(1)
    wide = (torch.randn(5, 300, generator=gen) * 2).to(DEVICE, HALF)
    x = wide[:, :256]  # a row stride of 300
    weight = torch.randn(256, generator=gen).to(DEVICE, HALF)
    want = norm_module(weight, 1e-6)(x)
    got = rms_norm(x, weight, 1e-6)
    assert got.dtype == HALF and ulp_distance(got, want) <= 1
    # A float32 weight promotes the output to float32, as `weight * normed` does in torch.
    weight32 = weight.float() + 0.001
    got32 = rms_norm(x, weight32, 1e-6)
    assert got32.dtype == torch.float32
    assert ulp_distance(got32, norm_module(weight32, 1e-6)(x)) <= 1


@direct
@pytest.mark.parametrize("dtype", [torch.float32, HALF], ids=["fp32", "half"])
def test_add_rms_norm(dtype):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(7, 128, generator=gen).to(DEVICE, dtype)
    residual = (torch.randn(7, 128, generator=gen) * 4).to(DEVICE, dtype)
    weight = torch.randn(128, generator=gen).to(DEVICE, dtype)
    new_residual = residual + x  # the decoder's `x = x + attn(...)`, in the activation dtype
    want = norm_module(weight, 1e-5)(new_residual)
    out, res = add_rms_norm(x, residual, weight, 1e-5)
    assert torch.equal(res, new_residual)
    if dtype == torch.float32:
        torch.testing.assert_close(out, want, atol=0.0, rtol=1e-6)
    else:
        assert ulp_distance(out, want) <= 1
    # In place: x receives the normed values, residual the new residual stream.
    x2, residual2 = x.clone(), residual.clone()
    out2, res2 = add_rms_norm(x2, residual2, weight, 1e-5, out=x2, residual_out=residual2)
    assert out2 is x2 and res2 is residual2
    assert torch.equal(x2, out) and torch.equal(residual2, res)
    empty_out, empty_res = add_rms_norm(x[:0], residual[:0], weight, 1e-5)
    assert empty_out.shape == (0, 128) and empty_res.shape == (0, 128)


# ----------------------------------------------------------------------------------------------------------- rotary


@direct
@pytest.mark.parametrize("dtype", [torch.float32, HALF], ids=["fp32", "half"])
@pytest.mark.parametrize("rope_type", ["default", "llama3"])
def test_rotary_bit_identical_in_place_on_qkv_views(dtype, rope_type):
    heads, kv_heads, head_dim, tokens = 4, 2, 32, 9
    rope = RopeConfig(rope_type=rope_type, theta=10000.0, factor=8.0, original_max_position_embeddings=64)
    module = RotaryEmbedding(rope, head_dim, 512, torch.device(DEVICE))
    gen = torch.Generator().manual_seed(6)
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * head_dim, generator=gen).to(DEVICE, dtype)
    positions = torch.randint(0, 512, (tokens,), generator=gen).to(DEVICE)
    positions[:2] = positions[2]  # repeated positions (parallel sampling, spec decoding)
    q = qkv[:, : heads * head_dim].view(tokens, heads, head_dim)
    k = qkv[:, heads * head_dim : (heads + kv_heads) * head_dim].view(tokens, kv_heads, head_dim)
    v_before = qkv[:, (heads + kv_heads) * head_dim :].clone()
    want_q, want_k = module(positions, q.clone(), k.clone())
    apply_rotary_(q, k, positions, module.cos, module.sin)
    assert ulp_distance(q, want_q) == 0 and ulp_distance(k, want_k) == 0
    assert torch.equal(qkv[:, (heads + kv_heads) * head_dim :], v_before)  # v untouched
    apply_rotary_(q[:0], k[:0], positions[:0], module.cos, module.sin)  # T == 0


@direct
@pytest.mark.parametrize("dtype", [torch.float32, HALF], ids=["fp32", "half"])
def test_rotary_also_writes_the_kv_cache(dtype):
    heads, kv_heads, head_dim, tokens, num_blocks, block_size = 4, 2, 32, 7, 5, 4
    rope = RopeConfig(rope_type="default", theta=10000.0)
    module = RotaryEmbedding(rope, head_dim, 512, torch.device(DEVICE))
    gen = torch.Generator().manual_seed(16)
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * head_dim, generator=gen).to(DEVICE, dtype)
    q = qkv[:, : heads * head_dim].view(tokens, heads, head_dim)
    k = qkv[:, heads * head_dim : (heads + kv_heads) * head_dim].view(tokens, kv_heads, head_dim)
    v = qkv[:, (heads + kv_heads) * head_dim :].view(tokens, kv_heads, head_dim)
    positions = torch.randint(0, 512, (tokens,), generator=gen).to(DEVICE)
    slots = torch.randperm(num_blocks * block_size, generator=gen)[:tokens].to(DEVICE)  # scattered, any order
    caches = torch.randn(2, num_blocks, block_size, kv_heads, head_dim, generator=gen).to(DEVICE, dtype)
    want_caches = caches.clone()
    want_q, want_k = module(positions, q.clone(), k.clone())
    write_kv(want_caches[0], want_caches[1], want_k, v, slots)
    apply_rotary_(q, k, positions, module.cos, module.sin, KVWrite(v, caches[0], caches[1], slots))
    assert ulp_distance(q, want_q) == 0 and ulp_distance(k, want_k) == 0
    assert torch.equal(caches, want_caches)  # the rotated k and the v at their slots, nothing else touched
    with pytest.raises(ValueError, match="slot_mapping"):
        apply_rotary_(q, k, positions, module.cos, module.sin, KVWrite(v, caches[0], caches[1], slots[:-1]))
    with pytest.raises(ValueError, match="caches"):
        apply_rotary_(q, k, positions, module.cos, module.sin, KVWrite(v, caches[0][..., :16], caches[1], slots))


# --------------------------------------------------------------------------------------------------- FP8 KV cache
FP8_KV = torch.float8_e4m3fn


@direct
@pytest.mark.parametrize("dtype", [torch.float32, HALF], ids=["fp32", "half"])
def test_rotary_writes_an_fp8_cache_as_write_kv_does(dtype):
    """The bytes the rotary kernel stores into an FP8 cache are those `write_kv` stores (clamped to +-448, rounded
    to nearest even), values past the range included (on the GPU; the interpreter's own FP8 cast is looser)."""
    heads, kv_heads, head_dim, tokens, num_blocks, block_size = 4, 2, 32, 7, 5, 4
    module = RotaryEmbedding(RopeConfig(rope_type="default", theta=10000.0), head_dim, 512, torch.device(DEVICE))
    gen = torch.Generator().manual_seed(41)
    qkv = (torch.randn(tokens, (heads + 2 * kv_heads) * head_dim, generator=gen) * 200).to(DEVICE, dtype)
    q = qkv[:, : heads * head_dim].view(tokens, heads, head_dim)
    k = qkv[:, heads * head_dim : (heads + kv_heads) * head_dim].view(tokens, kv_heads, head_dim)
    v = qkv[:, (heads + kv_heads) * head_dim :].view(tokens, kv_heads, head_dim)
    positions = torch.randint(0, 512, (tokens,), generator=gen).to(DEVICE)
    slots = torch.randperm(num_blocks * block_size, generator=gen)[:tokens].to(DEVICE)
    caches = torch.zeros(2, num_blocks, block_size, kv_heads, head_dim, device=DEVICE, dtype=FP8_KV)
    want_caches = caches.clone()
    _, want_k = module(positions, q.clone(), k.clone())
    write_kv(want_caches[0], want_caches[1], want_k, v, slots)
    apply_rotary_(q, k, positions, module.cos, module.sin, KVWrite(v, caches[0], caches[1], slots))
    if CUDA:  # cvt.rn.satfinite: round to nearest even, as torch
        assert torch.equal(caches.view(torch.uint8), want_caches.view(torch.uint8))
    else:  # Triton's interpreter casts to FP8 its own way (seen with triton 3.9: ties away from zero, subnormals
        # flushed, some values that round up to a power of two land one power low: 128 -> 64), so here each slot
        # is within that factor of what write_kv stored (a wrong slot would be far off); the bytes: on the GPU
        got, want = caches.float(), want_caches.float()
        assert bool(((got - want).abs() <= 0.5 * want.abs() + 2**-6).all())
    assert float(caches.float().abs().max()) == 448.0  # saturated, not NaN


@direct
@pytest.mark.parametrize("num_splits", [1, 4])
def test_decode_over_an_fp8_cache_is_decode_over_its_values(num_splits):
    """An FP8 cache holds values unscaled: the kernel and the torch path both attend over them as stored."""
    gen = torch.Generator().manual_seed(43 + num_splits)
    q, k, v, tables, ctx = decode_case(gen, 8, 2, 32, 16, [1, 5, 17, 64, 70], torch.float32)
    k8, v8 = (4 * k).to(FP8_KV), (4 * v).to(FP8_KV)
    want = decode_attention(q, k8.float(), v8.float(), tables, ctx, 0.2)
    torch.testing.assert_close(decode_attention(q, k8, v8, tables, ctx, 0.2), want, atol=0, rtol=0)
    got = paged_decode_attention(q, k8, v8, tables, ctx, 0.2, block_n=16, num_splits=num_splits)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@direct
def test_prefill_over_an_fp8_cache_is_prefill_over_its_values():
    gen = torch.Generator().manual_seed(47)
    q, k, v, tables, query_start, ctx = prefill_case(gen, 4, 2, 32, 16, MIXED, torch.float32)
    k8, v8 = (4 * k).to(FP8_KV), (4 * v).to(FP8_KV)
    want = prefill_reference(q, k8.float(), v8.float(), tables, MIXED, 0.2)
    got = paged_prefill_attention(q, k8, v8, tables, query_start, ctx, max(n for _, n in MIXED), 0.2, block_n=16)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------------------- GEMV


@direct
@pytest.mark.parametrize(
    "n, k, bias, dtype",
    [
        (37, 1000, True, torch.float32),  # n not a multiple of the 4-row block, k not of the 512-column tile
        (64, 1024, False, torch.float32),
        (37, 1000, True, HALF),
        (8, 512, False, HALF),
    ],
)
def test_gemv_matches_linear(n, k, bias, dtype):
    gen = torch.Generator().manual_seed(17)
    wide = torch.randn(n + 5, k + 24, generator=gen).to(DEVICE, dtype)
    weight = wide[3 : 3 + n, :k]  # a part of a fused weight, with a row stride wider than k
    x = torch.randn(1, k, generator=gen).to(DEVICE, dtype)
    b = torch.randn(n, generator=gen).to(DEVICE, dtype) if bias else None
    out = gemv(x, weight, b)
    want = x.double() @ weight.double().T + (b.double() if b is not None else 0)
    assert out.shape == (1, n) and out.dtype == dtype
    if dtype == torch.float32:
        assert float((out.double() - want).abs().max()) < 1e-3
    else:
        assert ulp_distance(out, want.to(dtype)) <= 1


@direct
def test_gemv_edge_cases():
    x = torch.randn(1, 64).to(DEVICE)
    assert gemv(x, torch.empty(0, 64, device=DEVICE)).shape == (1, 0)
    with pytest.raises(ValueError, match="x \\[1, K\\]"):
        gemv(torch.randn(2, 64).to(DEVICE), torch.randn(8, 64).to(DEVICE))
    with pytest.raises(ValueError, match="unit stride"):
        gemv(x, torch.randn(64, 8).to(DEVICE).T)
    with pytest.raises(ValueError, match="dtype"):
        gemv(x, torch.randn(8, 64).to(DEVICE, torch.float16))


@direct
@pytest.mark.parametrize(("n", "k", "bias"), [(96, 64, False), (37, 1000, True), (4, 2048, False), (130, 520, True)])
def test_fp8_gemv_matches_the_dequantized_product(n, k, bias):
    """FP8 weights with a row stride wider than k (a part of a fused weight), uneven n and k, a bias."""
    from trt_gateway.engine.quantization.fp8 import dequantize, quantize_per_channel

    gen = torch.Generator().manual_seed(23)
    q, scale = quantize_per_channel(torch.randn(n + 5, k + 32, generator=gen))
    q, scale = q.to(DEVICE)[3 : 3 + n, :k], scale.to(DEVICE)[3 : 3 + n].contiguous()
    x = torch.randn(1, k, generator=gen).to(DEVICE, HALF)
    b = torch.randn(n, generator=gen).to(DEVICE, HALF) if bias else None
    out = fp8_gemv(x, q, scale, b)
    want = x.double() @ dequantize(q, scale).double().T + (b.double() if b is not None else 0)
    assert out.shape == (1, n) and out.dtype == HALF
    assert ulp_distance(out, want.to(HALF)) <= 1


# ----------------------------------------------------------------------------------------------- the model with them


@direct
def test_llama_forward_with_kernels_matches_the_torch_paths():
    """The kernels in place inside the model (fused projections, rotary storing K/V, paged attention, norms, SwiGLU,
    the one-row GEMV under `one_row_gemv`): logits and KV cache as the torch paths give them, step after step, for
    prompt chunks, decodes beside a multi-token chunk, and a single row. float32, within 1e-4."""
    from contextlib import nullcontext

    from trt_gateway.engine.forward_batch import Chunk, layout
    from trt_gateway.engine.kv_cache import allocate_kv_cache
    from trt_gateway.engine.layers.linear import one_row_gemv
    from trt_gateway.engine.loader import load_model
    from trt_gateway.engine.model_config import parse_model_config

    cfg = parse_model_config(
        {
            "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 80, "max_position_embeddings": 64,
            "initializer_range": 0.2,
        }
    )  # fmt: skip
    device, block = torch.device(DEVICE), 4
    models, caches = {}, {}
    for kernels in (True, False):  # the same seeded weights
        models[kernels] = load_model("", cfg, device, torch.float32, 64, dummy=True, use_kernels=kernels)
        caches[kernels] = allocate_kv_cache(cfg, 6, block, torch.float32, device)
        for i, attn in enumerate(models[kernels].attention_layers()):
            attn.bind_cache(caches[kernels][0, i], caches[kernels][1, i])
    a, b = [0, 1, 2], [3, 4, 5]  # block tables
    steps = [
        [Chunk([5, 6, 7, 8, 9, 10], 0, a, num_logits=1), Chunk([11, 12, 13, 14], 0, b, num_logits=1)],
        [Chunk([15], 6, a, num_logits=1), Chunk([16], 4, b, num_logits=1)],
        [Chunk([17], 7, a, num_logits=1), Chunk([18, 19, 20], 5, b, num_logits=3)],  # a decode beside a chunk
        [Chunk([21], 8, a, num_logits=1)],  # one row: the GEMV
    ]
    with torch.inference_mode():
        for n, chunks in enumerate(steps):
            logits = {}
            for kernels, model in models.items():
                batch = layout(chunks, block, device, batched_prefill=kernels)
                with one_row_gemv() if kernels else nullcontext():
                    hidden = model(batch.input_ids, batch.positions, batch.meta)
                    logits[kernels] = model.compute_logits(hidden[batch.logit_rows])
            assert torch.allclose(logits[True], logits[False], atol=1e-4), (n, (logits[True] - logits[False]).abs().max())
            assert torch.allclose(caches[True], caches[False], atol=1e-5), n


# ------------------------------------------------------------------------------------------------------- activation


@direct
@pytest.mark.parametrize("dtype", [torch.float32, HALF], ids=["fp32", "half"])
def test_silu_and_mul(dtype):
    gen = torch.Generator().manual_seed(8)
    inter = 1500  # not a multiple of the 1024-column block
    wide = (torch.randn(3, 2 * inter + 8, generator=gen) * 4).to(DEVICE, dtype)
    gate_up = wide[:, : 2 * inter]  # a row stride wider than the row
    want = torch_activation.silu_and_mul(gate_up)  # the torch path: F.silu(gate) * up
    out = torch.full((3, inter), float("nan"), device=DEVICE, dtype=dtype)
    assert silu_and_mul(gate_up, out) is out
    assert ulp_distance(out, want) <= (SILU_FP32_ULPS if dtype == torch.float32 else 1)
    assert silu_and_mul(gate_up[:0]).shape == (0, inter)
