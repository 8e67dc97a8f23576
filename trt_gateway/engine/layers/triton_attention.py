"""Paged-attention decode as one Triton kernel: reads K/V straight through the block table, GQA without copies.

The torch path (`attention.decode_attention`) gathers every sequence's blocks into a padded [B, Hkv, L, D] copy
first: memory traffic of twice the KV plus the copy, and a shape that changes with the longest context. This kernel
reads each K/V row once, in place:

- one program per (sequence, KV head): the G = H / Hkv query heads sharing that KV head are one [G, D] tile, so each
  K/V row loaded serves all of them (GQA's whole point);
- the context is walked in tiles of BLOCK_N tokens; each token's slot comes from the block table
  (`table[t // block_size] * block_size + t % block_size`), so any block size works;
- online softmax (running max, running sum, rescaled accumulator) in float32, as FlashAttention does.

Status: verified against the torch path in Triton's interpreter on CPU (`tests/engine/test_triton_attention.py`);
not yet timed or run on a GPU, so the engine does not use it by default (`attention_backend = "triton"` opts in).
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch; CPU installs may lack it
    triton = None


if triton is not None:

    @triton.jit
    def _paged_decode_kernel(
        q_ptr,  # [B, H, D]
        k_cache_ptr,  # [num_blocks, block_size, Hkv, D]
        v_cache_ptr,
        table_ptr,  # [B, max_blocks] int64
        context_lens_ptr,  # [B] int64
        out_ptr,  # [B, H, D]
        scale,
        max_blocks,
        BLOCK_SIZE: tl.constexpr,
        NUM_KV_HEADS: tl.constexpr,
        GROUP: tl.constexpr,  # query heads per KV head
        GROUP_PAD: tl.constexpr,  # GROUP padded for tl.dot (>= 16)
        HEAD_DIM: tl.constexpr,
        BLOCK_N: tl.constexpr,  # context tokens per tile
    ):
        seq = tl.program_id(0)
        kv_head = tl.program_id(1)
        ctx = tl.load(context_lens_ptr + seq)

        g = tl.arange(0, GROUP_PAD)
        d = tl.arange(0, HEAD_DIM)
        heads = kv_head * GROUP + g
        q_mask = g < GROUP
        q = tl.load(
            q_ptr + (seq * NUM_KV_HEADS * GROUP + heads)[:, None] * HEAD_DIM + d[None, :],
            mask=q_mask[:, None],
            other=0.0,
        )  # [GROUP_PAD, D]

        m = tl.full([GROUP_PAD], float("-inf"), tl.float32)
        l_sum = tl.zeros([GROUP_PAD], tl.float32)
        acc = tl.zeros([GROUP_PAD, HEAD_DIM], tl.float32)
        for start in range(0, ctx, BLOCK_N):
            t = start + tl.arange(0, BLOCK_N)
            valid = t < ctx
            block = tl.load(table_ptr + seq * max_blocks + t // BLOCK_SIZE, mask=valid, other=0)
            slot = block * BLOCK_SIZE + t % BLOCK_SIZE
            kv_offs = (slot * NUM_KV_HEADS + kv_head)[:, None] * HEAD_DIM + d[None, :]
            k = tl.load(k_cache_ptr + kv_offs, mask=valid[:, None], other=0.0)  # [BLOCK_N, D]
            v = tl.load(v_cache_ptr + kv_offs, mask=valid[:, None], other=0.0)
            s = tl.dot(q, tl.trans(k)).to(tl.float32) * scale  # [GROUP_PAD, BLOCK_N]
            s = tl.where(valid[None, :], s, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, axis=1))
            alpha = tl.exp(m - m_new)
            p = tl.exp(s - m_new[:, None])
            l_sum = l_sum * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v).to(tl.float32)
            m = m_new
        out = acc / l_sum[:, None]
        tl.store(
            out_ptr + (seq * NUM_KV_HEADS * GROUP + heads)[:, None] * HEAD_DIM + d[None, :],
            out.to(out_ptr.dtype.element_ty),
            mask=q_mask[:, None],
        )


def available() -> bool:
    return triton is not None


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    block_n: int = 64,
) -> torch.Tensor:
    """Same contract as `attention.decode_attention`: q [B, H, D]; caches [num_blocks, block_size, Hkv, D];
    block_tables [B, M] int64; context_lens [B] int64 (>= 1) -> [B, H, D]."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    batch, num_heads, head_dim = q.shape
    block_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    group = num_heads // num_kv_heads
    if head_dim & (head_dim - 1):
        raise ValueError(f"head_dim must be a power of two for this kernel, got {head_dim}")
    out = torch.empty_like(q)
    if batch == 0:
        return out
    _paged_decode_kernel[(batch, num_kv_heads)](
        q.contiguous(),
        k_cache,
        v_cache,
        block_tables.contiguous(),
        context_lens.contiguous(),
        out,
        scale,
        block_tables.shape[1],
        BLOCK_SIZE=block_size,
        NUM_KV_HEADS=num_kv_heads,
        GROUP=group,
        GROUP_PAD=max(16, triton.next_power_of_2(group)),
        HEAD_DIM=head_dim,
        BLOCK_N=block_n,
    )
    return out
