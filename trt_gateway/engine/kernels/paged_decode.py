"""Paged-attention decode (one query token per sequence) as Triton kernels: K/V read in place through the block
table, GQA without copies, and split-K ("flash-decoding") when the batch alone cannot fill the GPU.

The torch path (`layers.attention.decode_attention`) gathers every sequence's blocks into a padded [B, Hkv, L, D]
copy first: twice the KV traffic plus the copy, and a shape that changes with the longest context. Here each K/V
row is read once, where it lives:

- one program per (sequence, KV head[, split]): the G = H / Hkv query heads that share a KV head are one [G, D]
  tile (padded to 16 rows, tl.dot's minimum), so each K/V row loaded serves all of them, which is GQA's point;
- the context is walked in tiles of BLOCK_N tokens; token t's slot comes from the block table
  (`table[t // block_size]`, `t % block_size`), so any block size works and only the ceil(ctx / block_size)
  table entries in use are read: rows may be padded with anything, and the table may be wider than needed;
- online softmax (running max, running sum, rescaled accumulator) in float32, in base 2 (`exp2` with the scale
  folded into log2(e)), as FlashAttention does;
- split-K: with few sequences, B * Hkv programs leave most of an H100's 132 SMs idle (batch 1 of Llama-3-8B is 8
  programs). Each sequence's context is then cut into NUM_SPLITS ranges of whole tiles, every range is one program
  writing an unnormalised partial (output / sum and log-sum-exp) to a float32 scratch buffer, and a second small
  kernel merges the partials. The split count is chosen from shapes alone (batch, KV heads, table width), never
  from context lengths, so it is fixed under a CUDA graph; the ranges are cut from the real context length inside
  the kernel, so short contexts leave trailing splits empty (they exit at once) rather than reading padding.

Contexts of length 0 (padding rows of a CUDA-graph batch) give an all-zero output, not NaN.

Sliding window (`window` > 0): only the last `window` tokens of each context are walked (the query, at position
ctx - 1, sees keys ctx - window ..= ctx - 1), and split-K cuts that range instead of the whole context.

Measured on an H100 (Llama-3-8B: H 32, Hkv 8, D 128, block 16, bf16; inside a CUDA graph; K+V bytes read over
time): batch 1 x 4096 tokens 11 us (1.5 TB/s), batch 8 x 2048 30 us (2.2 TB/s), batch 32 x 1024 49 us (2.7 TB/s),
batch 256 x 2048 694 us (3.1 TB/s); the torch path took 3-4x longer at large batches, far more at small ones.
Outside a graph, Triton's Python launch path costs about 40 us per call (70 us with the split merge).
"""

from __future__ import annotations

import functools

import torch

from trt_gateway.engine.kernels.paged_inputs import check_paged_inputs

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch; CPU installs may lack it
    triton = None

from trt_gateway.engine.kernels import pdl

_LOG2E = 1.4426950408889634  # exp(x) == exp2(x * log2(e)); exp2 is the hardware instruction
_MAX_SPLITS = 16
_MIN_TOKENS_PER_SPLIT = 256  # below this a split's fixed cost (partial write, merge) outweighs the parallelism
_NO_WINDOW = 2**31 - 1  # a window no int32 context reaches: ctx - _NO_WINDOW < 0, so every key is walked


if triton is not None:

    @triton.jit
    def _paged_decode_kernel(
        q_ptr,  # [B, H, D], heads contiguous, any token stride
        k_cache_ptr,  # [num_blocks, block_size, Hkv, D]
        v_cache_ptr,
        table_ptr,  # [B, M] int32 or int64
        context_lens_ptr,  # [B] int32 or int64
        out_ptr,  # [B, H, D] (NUM_SPLITS == 1)
        part_out_ptr,  # [B, H, NUM_SPLITS, D] float32 (NUM_SPLITS > 1)
        part_lse_ptr,  # [B, H, NUM_SPLITS] float32, log2 units
        qk_scale,  # softmax scale * log2(e)
        window,  # attend to the last `window` tokens only (_NO_WINDOW: all of them)
        stride_q,
        stride_out,
        stride_table,
        stride_k_block,
        stride_v_block,
        BLOCK_SIZE: tl.constexpr,
        NUM_KV_HEADS: tl.constexpr,
        GROUP: tl.constexpr,  # query heads per KV head
        GROUP_PAD: tl.constexpr,  # GROUP padded for tl.dot (>= 16)
        HEAD_DIM: tl.constexpr,
        BLOCK_N: tl.constexpr,  # context tokens per tile
        NUM_SPLITS: tl.constexpr,
        DOT_PRECISION: tl.constexpr,  # "ieee" for float32 inputs (tf32 would miss float32 accuracy), else ignored
        PDL: tl.constexpr,
    ):
        pdl.launch_dependents(PDL)
        pdl.wait(PDL)  # q and the cache rows come from the kernel before (kernels/pdl.py)
        seq = tl.program_id(0)
        kv_head = tl.program_id(1)
        ctx = tl.load(context_lens_ptr + seq).to(tl.int32)
        first = tl.maximum(ctx - window, 0)
        if NUM_SPLITS == 1:
            lo = first
            hi = ctx
        else:
            # Whole tiles per split, so only the last non-empty split has a ragged tail.
            tiles_per_split = tl.cdiv(tl.cdiv(ctx - first, BLOCK_N), NUM_SPLITS)
            lo = first + tl.program_id(2) * tiles_per_split * BLOCK_N
            hi = tl.minimum(lo + tiles_per_split * BLOCK_N, ctx)
            if lo >= hi:
                return  # the merge kernel counts the same non-empty splits and never reads this one

        g = tl.arange(0, GROUP_PAD)
        d = tl.arange(0, HEAD_DIM)
        heads = kv_head * GROUP + g
        q_mask = g < GROUP
        q = tl.load(
            q_ptr + seq.to(tl.int64) * stride_q + heads[:, None] * HEAD_DIM + d[None, :],
            mask=q_mask[:, None],
            other=0.0,
        )  # [GROUP_PAD, D]

        m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
        l_i = tl.zeros([GROUP_PAD], tl.float32)
        acc = tl.zeros([GROUP_PAD, HEAD_DIM], tl.float32)
        table_row = table_ptr + seq.to(tl.int64) * stride_table
        for start in range(lo, hi, BLOCK_N):
            t = start + tl.arange(0, BLOCK_N)
            valid = t < hi
            # int64 before multiplying: block * stride can pass 2**31 on a large cache.
            block = tl.load(table_row + t // BLOCK_SIZE, mask=valid, other=0).to(tl.int64)
            in_block = (t % BLOCK_SIZE) * (NUM_KV_HEADS * HEAD_DIM) + kv_head * HEAD_DIM
            k = tl.load(
                k_cache_ptr + (block * stride_k_block + in_block)[:, None] + d[None, :],
                mask=valid[:, None],
                other=0.0,
            )  # [BLOCK_N, D]
            v = tl.load(
                v_cache_ptr + (block * stride_v_block + in_block)[:, None] + d[None, :],
                mask=valid[:, None],
                other=0.0,
            )
            k = k.to(q.dtype)  # an FP8 cache holds values as they are (scale 1): converting is all it takes
            v = v.to(q.dtype)
            s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale  # [GROUP_PAD, BLOCK_N]
            s = tl.where(valid[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
            m_i = m_new

        if NUM_SPLITS == 1:
            l_safe = tl.where(l_i == 0.0, 1.0, l_i)  # ctx == 0: zeros, not 0 / 0
            tl.store(
                out_ptr + seq.to(tl.int64) * stride_out + heads[:, None] * HEAD_DIM + d[None, :],
                (acc / l_safe[:, None]).to(out_ptr.dtype.element_ty),
                mask=q_mask[:, None],
            )
        else:
            part = (seq.to(tl.int64) * (NUM_KV_HEADS * GROUP) + heads) * NUM_SPLITS + tl.program_id(2)
            tl.store(part_out_ptr + part[:, None] * HEAD_DIM + d[None, :], acc / l_i[:, None], mask=q_mask[:, None])
            tl.store(part_lse_ptr + part, m_i + tl.log2(l_i), mask=q_mask)

    @triton.jit
    def _merge_splits_kernel(
        part_out_ptr,  # [B, H, NUM_SPLITS, D] float32
        part_lse_ptr,  # [B, H, NUM_SPLITS] float32
        context_lens_ptr,
        out_ptr,
        window,
        stride_out,
        NUM_HEADS: tl.constexpr,
        HEAD_DIM: tl.constexpr,
        BLOCK_N: tl.constexpr,
        NUM_SPLITS: tl.constexpr,
        PDL: tl.constexpr,
    ):
        pdl.launch_dependents(PDL)
        pdl.wait(PDL)  # the partials come from the attention kernel before
        seq = tl.program_id(0)
        head = tl.program_id(1)
        ctx = tl.load(context_lens_ptr + seq).to(tl.int32)
        ctx = tl.minimum(ctx, window)  # the length of the range the attention kernel cut
        # The same cut as in the attention kernel: splits past `used` were empty and wrote nothing.
        tiles = tl.cdiv(ctx, BLOCK_N)
        tiles_per_split = tl.maximum(tl.cdiv(tiles, NUM_SPLITS), 1)
        used = tl.cdiv(tiles, tiles_per_split)
        sp = tl.arange(0, NUM_SPLITS)
        live = sp < used
        d = tl.arange(0, HEAD_DIM)
        base = (seq.to(tl.int64) * NUM_HEADS + head) * NUM_SPLITS
        lse = tl.load(part_lse_ptr + base + sp, mask=live, other=float("-inf"))
        o = tl.load(part_out_ptr + (base + sp)[:, None] * HEAD_DIM + d[None, :], mask=live[:, None], other=0.0)
        lse_max = tl.max(lse, axis=0)
        lse_max = tl.where(lse_max == float("-inf"), 0.0, lse_max)  # ctx == 0: no live split, avoid -inf - -inf
        w = tl.exp2(lse - lse_max)  # dead splits: exp2(-inf) == 0
        total = tl.sum(w, axis=0)
        merged = tl.sum(w[:, None] * o, axis=0) / tl.where(total > 0.0, total, 1.0)  # ctx == 0: zeros
        tl.store(out_ptr + seq.to(tl.int64) * stride_out + head * HEAD_DIM + d, merged.to(out_ptr.dtype.element_ty))


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def choose_num_splits(batch: int, num_kv_heads: int, max_context: int, device: torch.device) -> int:
    """Splits per sequence from shapes only (stable under CUDA graphs): none once B * Hkv programs cover the SMs,
    else enough for about two programs per SM, each split at least _MIN_TOKENS_PER_SPLIT tokens of the widest
    possible context, a power of two, at most 16.

    Measured on an H100 (Llama-3-8B shapes, bf16, inside a CUDA graph): batch 1 at 4096 tokens 81 us -> 11 us (16
    splits), batch 8 at 2048 tokens 59 us -> 30 us (4 splits); at batch 32 (256 programs) splitting only cost time."""
    if device.type != "cuda":
        return 1
    sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    programs = batch * num_kv_heads
    if programs >= sms:
        return 1
    want = min(_MAX_SPLITS, -(-2 * sms // max(programs, 1)), max_context // _MIN_TOKENS_PER_SPLIT)
    if want < 2:
        return 1
    return 1 << (want.bit_length() - 1)  # round down to a power of two (tl.arange in the merge)


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    out: torch.Tensor | None = None,
    *,
    block_n: int = 64,
    num_splits: int | None = None,
    num_warps: int = 4,
    window: int = 0,
) -> torch.Tensor:
    """Attention of one query token per sequence over its paged context.

    q [B, H, D] (heads contiguous; any token stride); k_cache, v_cache [num_blocks, block_size, Hkv, D] (each
    block contiguous; any block stride); block_tables [B, M] int32/int64 (only the first ceil(ctx / block_size)
    entries of a row are read); context_lens [B] int32/int64 (0 gives zeros); window > 0 keeps the last `window`
    keys of each context only. Writes `out` ([B, H, D], heads
    contiguous; allocated when None) and returns it. `num_splits` (a power of two) overrides the split-K heuristic.
    """
    if triton is None:
        raise RuntimeError("triton is not installed")
    if block_tables.shape[0] != q.shape[0] or context_lens.shape != (q.shape[0],):
        raise ValueError(f"block_tables {tuple(block_tables.shape)} / context_lens {tuple(context_lens.shape)}")
    q, block_tables, out, block_size, num_kv_heads = check_paged_inputs(
        q, k_cache, v_cache, block_tables, out, "[B, H, D]"
    )
    batch, num_heads, head_dim = q.shape
    if batch == 0:
        return out

    group = num_heads // num_kv_heads
    if num_splits is None:
        num_splits = choose_num_splits(batch, num_kv_heads, block_tables.shape[1] * block_size, q.device)
    if num_splits < 1 or num_splits & (num_splits - 1):
        raise ValueError(f"num_splits must be a power of two, got {num_splits}")
    if num_splits > 1:
        part_out = torch.empty(batch, num_heads, num_splits, head_dim, dtype=torch.float32, device=q.device)
        part_lse = torch.empty(batch, num_heads, num_splits, dtype=torch.float32, device=q.device)
    else:
        part_out = part_lse = out  # unused by the kernel when NUM_SPLITS == 1
    _paged_decode_kernel[(batch, num_kv_heads, num_splits)](
        q,
        k_cache,
        v_cache,
        block_tables,
        context_lens,
        out,
        part_out,
        part_lse,
        scale * _LOG2E,
        window if window > 0 else _NO_WINDOW,
        q.stride(0),
        out.stride(0),
        block_tables.stride(0),
        k_cache.stride(0),
        v_cache.stride(0),
        BLOCK_SIZE=block_size,
        NUM_KV_HEADS=num_kv_heads,
        GROUP=group,
        GROUP_PAD=max(16, triton.next_power_of_2(group)),
        HEAD_DIM=head_dim,
        BLOCK_N=block_n,
        NUM_SPLITS=num_splits,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=num_warps,
        **pdl.launch(q.device),
    )
    if num_splits > 1:
        _merge_splits_kernel[(batch, num_heads)](
            part_out,
            part_lse,
            context_lens,
            out,
            window if window > 0 else _NO_WINDOW,
            out.stride(0),
            NUM_HEADS=num_heads,
            HEAD_DIM=head_dim,
            BLOCK_N=block_n,
            NUM_SPLITS=num_splits,
            num_warps=num_warps,
            **pdl.launch(q.device),
        )
    return out
