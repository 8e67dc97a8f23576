"""The argument checks and layout fix-ups the two paged-attention kernels share (host side, no device sync)."""

from __future__ import annotations

from typing import NamedTuple

import torch


class PagedInputs(NamedTuple):
    q: torch.Tensor  # heads contiguous (copied only when a caller passed an odd view)
    block_tables: torch.Tensor  # rows contiguous
    out: torch.Tensor  # [*, H, D], heads contiguous
    block_size: int
    num_kv_heads: int


def check_paged_inputs(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    out: torch.Tensor | None,
    out_name: str,
) -> PagedInputs:
    """q [rows, H, D] against caches [num_blocks, block_size, Hkv, D]; raises ValueError naming what does not fit.
    out_name: the expected output shape for the message ("[B, H, D]")."""
    if q.dim() != 3 or k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(f"bad shapes: q {tuple(q.shape)}, k_cache {tuple(k_cache.shape)}, v {tuple(v_cache.shape)}")
    _, num_heads, head_dim = q.shape
    _, block_size, num_kv_heads, cache_dim = k_cache.shape
    if cache_dim != head_dim or num_heads % num_kv_heads:
        raise ValueError(f"q {tuple(q.shape)} does not fit the cache {tuple(k_cache.shape)}")
    if head_dim < 16 or head_dim & (head_dim - 1):
        raise ValueError(f"head_dim must be a power of two >= 16 for this kernel, got {head_dim}")
    if k_cache.dtype != v_cache.dtype or k_cache.dtype not in (q.dtype, torch.float8_e4m3fn):
        raise ValueError(
            f"k_cache and v_cache must be q's dtype or float8_e4m3fn, got {q.dtype}, {k_cache.dtype}, {v_cache.dtype}"
        )
    inner = (num_kv_heads * head_dim, head_dim, 1)
    if k_cache.stride()[1:] != inner or v_cache.stride()[1:] != inner:
        raise ValueError("each cache block must be contiguous")
    if q.stride(2) != 1 or q.stride(1) != head_dim:
        q = q.contiguous()  # rare: a caller's odd view; the engine passes heads-contiguous rows
    if block_tables.stride(1) != 1:
        block_tables = block_tables.contiguous()
    if out is None:
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    elif out.shape != q.shape or out.dtype != q.dtype or out.stride(2) != 1 or out.stride(1) != head_dim:
        raise ValueError(
            f"out must be {out_name} {q.dtype} with heads contiguous, got {tuple(out.shape)} {out.dtype}"
        )
    return PagedInputs(q, block_tables, out, block_size, num_kv_heads)
