"""Rotary position embeddings (HF "rotate_half" layout) applied in place to q and k in one Triton kernel, which can
also store the rotated k and the v into the paged KV cache (saving the two index_copy kernels of `write_kv`).

`layers.rotary.RotaryEmbedding` gathers cos/sin rows, casts them, and builds rotate_half(x) with a cat: several
full passes over q and k and four temporaries. Here one program per token reads that token's cos/sin row once and
rewrites all of its query and key heads where they are, so q and k may be views into the fused qkv projection
output ([T, (H + 2 Hkv) * D], i.e. any token stride; within a token, heads at any stride, dims contiguous).

Numerics are those of torch eager, rounding for rounding. With x1, x2 the two halves of a head, c = cos[pos] and
s = sin[pos] cast to x.dtype first (as the torch path does), each half is

    out1 = round(round(x1 * c1) + round(-x2 * s1)),   out2 = round(round(x2 * c2) + round(x1 * s2))

where round() is to x.dtype (a no-op in float32). A product or sum of two half values computed in float32 and
rounded once is what torch does, and fused multiply-adds are disabled at launch, so the result is bit-identical to
the torch path in every dtype (checked on an H100 against torch's CUDA path in float32, bf16 and fp16).

Measured on an H100 (bf16, Llama-3-8B's 32 + 8 heads of 128, 8192 tokens): 66 us (2.5 TB/s; torch eager 549 us).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch; CPU installs may lack it
    triton = None

from trt_gateway.engine.kernels import pdl

if triton is not None:

    @triton.jit
    def _rotate_heads(
        base, stride_head, num_heads, c1, c2, s1, s2, j, j_ok, HALF: tl.constexpr, HEADS_PAD: tl.constexpr
    ):
        h = tl.arange(0, HEADS_PAD)
        mask = (h < num_heads)[:, None] & j_ok[None, :]
        ptr1 = base + h[:, None] * stride_head + j[None, :]
        x1 = tl.load(ptr1, mask=mask, other=0.0)
        x2 = tl.load(ptr1 + HALF, mask=mask, other=0.0)
        dtype = x1.dtype
        a1 = x1.to(tl.float32)
        a2 = x2.to(tl.float32)
        out1 = ((a1 * c1).to(dtype).to(tl.float32) + (-a2 * s1).to(dtype).to(tl.float32)).to(dtype)
        out2 = ((a2 * c2).to(dtype).to(tl.float32) + (a1 * s2).to(dtype).to(tl.float32)).to(dtype)
        tl.store(ptr1, out1, mask=mask)
        tl.store(ptr1 + HALF, out2, mask=mask)
        return out1, out2

    @triton.jit
    def _to_cache(x, base):
        """x as the cache stores it: unchanged in the model's dtype; FP8 E4M3 as torch casts it (`to_cache` in
        layers/attention.py): from float32, clamped to +-448, rounded to nearest even."""
        dtype = base.dtype.element_ty
        if dtype == tl.float8e4nv:
            return tl.clamp(x.to(tl.float32), -448.0, 448.0).to(dtype)
        return x.to(dtype)

    @triton.jit
    def _store_heads(base, stride_head, num_heads, x1, x2, j, j_ok, HALF: tl.constexpr, HEADS_PAD: tl.constexpr):
        h = tl.arange(0, HEADS_PAD)
        mask = (h < num_heads)[:, None] & j_ok[None, :]
        ptr1 = base + h[:, None] * stride_head + j[None, :]
        tl.store(ptr1, _to_cache(x1, base), mask=mask)
        tl.store(ptr1 + HALF, _to_cache(x2, base), mask=mask)

    @triton.jit
    def _rotary_kernel(
        q_ptr,  # [T, H, D]
        k_ptr,  # [T, Hkv, D]
        positions_ptr,  # [T] int32 or int64
        cos_ptr,  # [P, D]
        sin_ptr,
        stride_q_tok,
        stride_q_head,
        stride_k_tok,
        stride_k_head,
        stride_cos,
        stride_sin,
        num_q_heads,
        num_k_heads,
        v_ptr,  # [T, Hkv, D]; this and the cache arguments are used only when WRITE_CACHE
        slot_ptr,  # [T] int64: each token's slot in the caches
        k_cache_ptr,  # [slots, Hkv, D]
        v_cache_ptr,
        stride_v_tok,
        stride_v_head,
        stride_cache_slot,
        stride_cache_head,
        HALF: tl.constexpr,  # D // 2
        HALF_PAD: tl.constexpr,
        Q_HEADS_PAD: tl.constexpr,
        K_HEADS_PAD: tl.constexpr,
        WRITE_CACHE: tl.constexpr,
        PDL: tl.constexpr,
    ):
        pdl.launch_dependents(PDL)
        pdl.wait(PDL)  # q, k, v come from the projection before; q and k are rewritten in place (kernels/pdl.py)
        tok = tl.program_id(0).to(tl.int64)
        pos = tl.load(positions_ptr + tok).to(tl.int64)
        j = tl.arange(0, HALF_PAD)
        j_ok = j < HALF
        dtype = q_ptr.dtype.element_ty
        # cos/sin cast to the activation dtype first, as the torch path does (`self.cos[positions].to(q.dtype)`).
        c1 = tl.load(cos_ptr + pos * stride_cos + j, mask=j_ok, other=0.0).to(dtype).to(tl.float32)[None, :]
        c2 = tl.load(cos_ptr + pos * stride_cos + HALF + j, mask=j_ok, other=0.0).to(dtype).to(tl.float32)[None, :]
        s1 = tl.load(sin_ptr + pos * stride_sin + j, mask=j_ok, other=0.0).to(dtype).to(tl.float32)[None, :]
        s2 = tl.load(sin_ptr + pos * stride_sin + HALF + j, mask=j_ok, other=0.0).to(dtype).to(tl.float32)[None, :]
        _rotate_heads(
            q_ptr + tok * stride_q_tok, stride_q_head, num_q_heads, c1, c2, s1, s2, j, j_ok, HALF, Q_HEADS_PAD
        )
        k1, k2 = _rotate_heads(
            k_ptr + tok * stride_k_tok, stride_k_head, num_k_heads, c1, c2, s1, s2, j, j_ok, HALF, K_HEADS_PAD
        )
        if WRITE_CACHE:
            slot = tl.load(slot_ptr + tok).to(tl.int64)
            _store_heads(
                k_cache_ptr + slot * stride_cache_slot,
                stride_cache_head,
                num_k_heads,
                k1,
                k2,
                j,
                j_ok,
                HALF,
                K_HEADS_PAD,
            )
            h = tl.arange(0, K_HEADS_PAD)
            mask = (h < num_k_heads)[:, None] & j_ok[None, :]
            v1_ptr = v_ptr + tok * stride_v_tok + h[:, None] * stride_v_head + j[None, :]
            v1 = tl.load(v1_ptr, mask=mask, other=0.0)
            v2 = tl.load(v1_ptr + HALF, mask=mask, other=0.0)
            _store_heads(
                v_cache_ptr + slot * stride_cache_slot,
                stride_cache_head,
                num_k_heads,
                v1,
                v2,
                j,
                j_ok,
                HALF,
                K_HEADS_PAD,
            )


def apply_rotary_(
    q: torch.Tensor,
    k: torch.Tensor,
    positions: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    cache: KVWrite | None = None,
) -> None:
    """Rotate q [T, H, D] and k [T, Hkv, D] in place by the angles of `positions` [T] (int32/int64, each < P; not
    checked, that would need a host sync) from cos, sin [P, D] (float32, or any float).

    q and k: one dtype, unit stride along D, any token and head strides (e.g. views of one qkv projection output).
    cache: also write the rotated k and the given v into the paged caches at each token's slot, in the same launch
    (what `layers.attention.write_kv` does with two index_copy kernels).
    """
    if triton is None:
        raise RuntimeError("triton is not installed")
    if q.dim() != 3 or k.dim() != 3 or cos.dim() != 2 or cos.shape != sin.shape:
        raise ValueError(
            f"bad shapes: q {tuple(q.shape)}, k {tuple(k.shape)}, cos {tuple(cos.shape)}, sin {tuple(sin.shape)}"
        )
    tokens, num_q_heads, head_dim = q.shape
    if k.shape[0] != tokens or k.shape[2] != head_dim or positions.shape != (tokens,) or cos.shape[1] != head_dim:
        raise ValueError(
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, positions {tuple(positions.shape)}, cos {tuple(cos.shape)} disagree"
        )
    if head_dim % 2 or q.dtype != k.dtype:
        raise ValueError(f"head_dim must be even and q, k of one dtype, got {head_dim}, {q.dtype}, {k.dtype}")
    if q.stride(2) != 1 or k.stride(2) != 1 or cos.stride(1) != 1 or sin.stride(1) != 1:
        raise ValueError("q, k, cos and sin must have unit stride along the head dimension")
    if cache is not None:
        cache.check(k)
    if tokens == 0:
        return
    half = head_dim // 2
    v, slots, k_cache, v_cache = (
        (cache.v, cache.slot_mapping, cache.k_slots, cache.v_slots) if cache is not None else (k, positions, k, k)
    )
    _rotary_kernel[(tokens,)](
        q,
        k,
        positions,
        cos,
        sin,
        q.stride(0),
        q.stride(1),
        k.stride(0),
        k.stride(1),
        cos.stride(0),
        sin.stride(0),
        num_q_heads,
        k.shape[1],
        v,
        slots,
        k_cache,
        v_cache,
        v.stride(0),
        v.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        HALF=half,
        HALF_PAD=triton.next_power_of_2(half),
        Q_HEADS_PAD=triton.next_power_of_2(num_q_heads),
        K_HEADS_PAD=triton.next_power_of_2(k.shape[1]),
        WRITE_CACHE=cache is not None,
        num_warps=4,
        enable_fp_fusion=False,
        **pdl.launch(q.device),
    )


@dataclass(frozen=True)
class KVWrite:
    """Where apply_rotary_ also stores each token's rotated k and its v: the paged caches [num_blocks, block_size,
    Hkv, D] (contiguous, as the model runner allocates them) at slot_mapping [T] (block * block_size + offset)."""

    v: torch.Tensor  # [T, Hkv, D], unit stride along D
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    slot_mapping: torch.Tensor  # [T] int64

    @property
    def k_slots(self) -> torch.Tensor:
        return self.k_cache.view(-1, *self.k_cache.shape[2:])  # [slots, Hkv, D]

    @property
    def v_slots(self) -> torch.Tensor:
        return self.v_cache.view(-1, *self.v_cache.shape[2:])

    def check(self, k: torch.Tensor) -> None:
        if self.v.shape != k.shape or self.v.dtype != k.dtype or self.v.stride(2) != 1:
            raise ValueError(f"v {tuple(self.v.shape)} {self.v.dtype} must match k {tuple(k.shape)} {k.dtype}")
        if self.k_cache.dim() != 4 or self.k_cache.shape[2:] != k.shape[1:] or self.v_cache.shape != self.k_cache.shape:
            raise ValueError(
                f"caches {tuple(self.k_cache.shape)}, {tuple(self.v_cache.shape)} do not hold k {tuple(k.shape)}"
            )
        dtypes = (k.dtype, torch.float8_e4m3fn)
        if not (self.k_cache.is_contiguous() and self.v_cache.is_contiguous()) or self.k_cache.dtype not in dtypes:
            raise ValueError("the caches must be contiguous and of k's dtype or float8_e4m3fn")
        if self.slot_mapping.shape != k.shape[:1]:
            raise ValueError(f"slot_mapping {tuple(self.slot_mapping.shape)} must be [T] for k {tuple(k.shape)}")
