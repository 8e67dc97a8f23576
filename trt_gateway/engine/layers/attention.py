"""Paged attention in plain torch, for CPU and CUDA, over a batch that mixes decodes and (chunked) prefills.

The KV cache of one layer is two tensors [num_blocks, block_size, Hkv, D]; token t of a sequence lives in slot
`block_table[t // block_size] * block_size + t % block_size`. Each step:

1. the new tokens' K/V are scattered into their slots (`slot_mapping`), so a chunk attends to earlier chunks and to
   prefix-cache hits exactly like to its own tokens;
2. decodes (one query each, always first in the flattened batch) run as ONE padded batch: gather every sequence's
   blocks through a padded block table and mask the padding. Shapes depend only on (batch, max blocks), which a
   later CUDA-graph capture can fix by bucketing;
3. prefill chunks run one sequence at a time (a varlen loop) with a causal mask offset by the tokens already cached.

On CUDA (`use_kernels`) step 1 happens inside the rotary kernel (`kv_write`: k is stored as it is rotated), and
steps 2 and 3 are one Triton launch each (`kernels.paged_decode`, `kernels.paged_prefill`)
reading K/V in place through the block tables; the prefill chunks then come as one `PrefillBatch` instead of spans.
The decode launch reads only each sequence's own blocks whatever the table's width, so a CUDA graph can hold the
table at its widest (`cuda_graphs.DecodeGraphs`).

Sliding window (Mistral, Gemma2's even layers, Qwen with use_sliding_window): query position p sees keys
p - window + 1 ..= p, as HF's mask does. Every block stays in the cache (prefix caching and preemption are
unchanged); the window is a mask in the torch path and a lower bound on the keys walked in the kernels.
Soft-capping (Gemma2: scores -> cap * tanh(scores / cap) before the mask) has no kernel and SDPA cannot do it, so
those models run the explicit torch attention below on every device (`loader.kernels_usable` says no).

An FP8 cache (`kv_cache_dtype="fp8"`) holds K/V unscaled (`to_cache`); every path attends over those rounded values,
a fresh prompt included (docs/engine.md#fp8-kv-cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # the kernels import triton, which CPU installs may lack
    from trt_gateway.engine.kernels.rotary_store import KVWrite


@dataclass(frozen=True, slots=True)
class PrefillSpan:
    """One sequence's chunk of query tokens in the flattened batch."""

    query_start: int  # index of its first token in the flattened batch
    num_query: int  # tokens computed this step
    context_len: int  # tokens it attends to: cached before this step + num_query
    block_table: torch.Tensor | None  # [ceil(context_len / block_size)]; None when nothing was cached before


@dataclass(frozen=True, slots=True)
class PrefillBatch:
    """Every prefill chunk of a step, for one varlen kernel launch. Rows are those after the decodes."""

    query_start: torch.Tensor  # [N + 1] int32, chunk i's rows are query_start[i] ..< query_start[i + 1]
    block_tables: torch.Tensor  # [N, M] int64, padded with block 0 (never read past a chunk's context)
    context_lens: torch.Tensor  # [N] int64: cached tokens + the chunk's own
    max_query_len: int


@dataclass(frozen=True, slots=True)
class AttentionMetadata:
    """Where the step's tokens go in the KV cache and what each one attends to. Passed down, never global."""

    slot_mapping: torch.Tensor  # [T] int64
    num_decodes: int  # the first num_decodes tokens are decodes, one per sequence
    decode_block_tables: torch.Tensor  # [num_decodes, max_blocks] int64, padded with block 0 (masked out)
    decode_context_lens: torch.Tensor  # [num_decodes] int64
    prefills: tuple[PrefillSpan, ...]  # the torch path's chunks (empty when prefill_batch carries them)
    prefill_batch: PrefillBatch | None = None  # the kernel path's chunks


@dataclass(frozen=True, slots=True)
class AttentionShape:
    """What one layer's attention computes besides its heads: softmax scale, window and soft-cap."""

    scale: float
    window: int | None = None  # keys within `window` positions of the query (itself included); None: all
    softcap: float | None = None


class Attention(nn.Module):
    def __init__(
        self,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        use_kernels: bool = False,
        shape: AttentionShape | None = None,
    ) -> None:
        super().__init__()
        self.use_kernels = use_kernels
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.shape = shape or AttentionShape(head_dim**-0.5)
        if use_kernels and self.shape.softcap is not None:
            raise ValueError("attention soft-capping has no kernel; load the model with use_kernels=False")
        self.scale = self.shape.scale
        self._torch_shape = (self.shape.scale, self.shape.window, self.shape.softcap)
        self.k_cache: torch.Tensor | None = None  # [num_blocks, block_size, Hkv, D], bound by the model runner
        self.v_cache: torch.Tensor | None = None

    def bind_cache(self, k_cache: torch.Tensor, v_cache: torch.Tensor) -> None:
        self.k_cache, self.v_cache = k_cache, v_cache

    def kv_write(self, v: torch.Tensor, meta: AttentionMetadata) -> KVWrite:
        """For the rotary kernel: where to store the step's k (once rotated) and v, so it does the write itself."""
        from trt_gateway.engine.kernels.rotary_store import KVWrite

        if self.k_cache is None or self.v_cache is None:
            raise RuntimeError("Attention used before the model runner bound a KV cache")
        return KVWrite(v, self.k_cache, self.v_cache, meta.slot_mapping)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata, kv_written: bool = False
    ) -> torch.Tensor:
        """q: [T, H, D]; k, v: [T, Hkv, D] -> [T, H, D]. kv_written: k and v are in the cache already (kv_write)."""
        if self.k_cache is None or self.v_cache is None:
            raise RuntimeError("Attention used before the model runner bound a KV cache")
        if not kv_written:
            write_kv(self.k_cache, self.v_cache, k, v, meta.slot_mapping)
        if self.use_kernels:
            return self._forward_kernels(q, meta)
        if self.k_cache.dtype != k.dtype:  # an FP8 cache: a fresh prompt attends to its K/V as the cache holds them,
            k, v = as_cached(k, self.k_cache.dtype), as_cached(v, self.v_cache.dtype)  # as its later tokens will
        out = torch.empty_like(q)
        n = meta.num_decodes
        if n:
            out[:n] = decode_attention(
                q[:n],
                self.k_cache,
                self.v_cache,
                meta.decode_block_tables,
                meta.decode_context_lens,
                *self._torch_shape,
            )
        for span in meta.prefills:
            rows = slice(span.query_start, span.query_start + span.num_query)
            out[rows] = prefill_attention(
                q[rows], k[rows], v[rows], self.k_cache, self.v_cache, span, *self._torch_shape
            )
        return out

    def _forward_kernels(self, q: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        from trt_gateway.engine.kernels.paged_decode import paged_decode_attention
        from trt_gateway.engine.kernels.paged_prefill import paged_prefill_attention

        assert self.k_cache is not None and self.v_cache is not None  # checked by forward
        n = meta.num_decodes
        window = self.shape.window or 0
        if meta.prefill_batch is None:  # decodes only: the common step, and the one CUDA graphs capture
            return paged_decode_attention(
                q, self.k_cache, self.v_cache, meta.decode_block_tables, meta.decode_context_lens, self.scale,
                window=window,
            )  # fmt: skip
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        if n:
            paged_decode_attention(
                q[:n],
                self.k_cache,
                self.v_cache,
                meta.decode_block_tables,
                meta.decode_context_lens,
                self.scale,
                out=out[:n],
                window=window,
            )
        p = meta.prefill_batch
        paged_prefill_attention(
            q[n:],
            self.k_cache,
            self.v_cache,
            p.block_tables,
            p.query_start,
            p.context_lens,
            p.max_query_len,
            self.scale,
            out=out[n:],
            window=window,
        )
        return out


FP8_KV_MAX = 448.0  # E4M3's largest finite value


def to_cache(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x as a cache of `dtype` stores it: FP8 E4M3 values as they are (scale 1), clamped to +-448 so nothing
    overflows to NaN, rounded to nearest even (the rotary kernel stores the same bytes)."""
    if dtype == x.dtype:
        return x
    if dtype == torch.float8_e4m3fn:
        return x.float().clamp(-FP8_KV_MAX, FP8_KV_MAX).to(dtype)
    return x.to(dtype)


def as_cached(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x rounded to what a cache of `dtype` holds, back in x's dtype."""
    return to_cache(x, dtype).to(x.dtype)


def write_kv(
    k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """Scatter k, v [T, Hkv, D] into the caches [num_blocks, block_size, Hkv, D] at slot_mapping [T]; an FP8 cache
    stores `to_cache` of them (as bytes: index_copy_ has no float8 kernel on the CPU)."""
    num_kv_heads, head_dim = k.shape[1:]
    for cache, x in ((k_cache, k), (v_cache, v)):
        if cache.dtype == x.dtype:
            cache.view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, x)
        else:
            rows = cache.view(torch.uint8).view(-1, num_kv_heads, head_dim)
            rows.index_copy_(0, slot_mapping, to_cache(x, cache.dtype).view(torch.uint8))


def gather_kv(cache: torch.Tensor, block_tables: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """cache [num_blocks, bs, Hkv, D], block_tables [B, M] -> [B, Hkv, M * bs, D] in `dtype`, the layout SDPA
    wants (an FP8 cache's values converted: they are stored unscaled)."""
    batch, max_blocks = block_tables.shape
    block_size, num_kv_heads, head_dim = cache.shape[1:]
    kv = cache[block_tables].view(batch, max_blocks * block_size, num_kv_heads, head_dim)
    return kv.to(dtype).transpose(1, 2)


def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    window: int | None = None,
    softcap: float | None = None,
) -> torch.Tensor:
    """q: [B, H, D]; block_tables: [B, M]; context_lens: [B] -> [B, H, D]. Keys past context_len are masked, and
    with a window those before context_len - window."""
    k = gather_kv(k_cache, block_tables, q.dtype)  # [B, Hkv, L, D]
    v = gather_kv(v_cache, block_tables, q.dtype)
    key_pos = torch.arange(k.shape[2], device=q.device)
    valid = key_pos[None, :] < context_lens[:, None]  # [B, L]
    if window is not None:
        valid &= key_pos[None, :] >= context_lens[:, None] - window
    out = _attention(q[:, :, None, :], k, v, valid[:, None, None, :], scale, softcap)  # [B, H, 1, D]
    return out[:, :, 0, :]


def prefill_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    span: PrefillSpan,
    scale: float,
    window: int | None = None,
    softcap: float | None = None,
) -> torch.Tensor:
    """q: [n, H, D]; k, v: [n, Hkv, D] (this chunk's) -> [n, H, D]."""
    qh = q.transpose(0, 1)[None]  # [1, H, n, D]
    if span.block_table is None and window is None and softcap is None:
        # Fresh prompt: the chunk is the whole context, plain causal attention on the new K/V.
        out = F.scaled_dot_product_attention(
            qh, k.transpose(0, 1)[None], v.transpose(0, 1)[None], is_causal=True, scale=scale, enable_gqa=True
        )
        return out[0].transpose(0, 1)
    ctx = span.context_len
    if span.block_table is None:  # fresh prompt: this chunk's own K/V are the whole context
        keys, values = k.transpose(0, 1)[None], v.transpose(0, 1)[None]
    else:
        keys = gather_kv(k_cache, span.block_table[None], q.dtype)[:, :, :ctx]  # [1, Hkv, ctx, D]
        values = gather_kv(v_cache, span.block_table[None], q.dtype)[:, :, :ctx]
    # Query i sits at absolute position ctx - n + i and sees keys 0 ..= that position (within the window).
    q_pos = torch.arange(ctx - span.num_query, ctx, device=q.device)
    k_pos = torch.arange(ctx, device=q.device)
    mask = k_pos[None, :] <= q_pos[:, None]  # [n, ctx]
    if window is not None:
        mask &= k_pos[None, :] > q_pos[:, None] - window
    return _attention(qh, keys, values, mask, scale, softcap)[0].transpose(0, 1)  # [n, H, D]


def _attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float, softcap: float | None
) -> torch.Tensor:
    """q [B, H, n, D], k/v [B, Hkv, L, D], mask broadcastable to [B, H, n, L] (True: attend) -> [B, H, n, D]."""
    if softcap is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=True)
    # HF Gemma2's eager attention: scale, cap, mask, float32 softmax cast back, then the values.
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = torch.matmul(q, k.transpose(2, 3)) * scale
    scores = torch.tanh(scores / softcap) * softcap
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(weights, v)
