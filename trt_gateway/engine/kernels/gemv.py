"""y = x @ W.T (+ bias) for a single row x: the matrix-vector product of every projection in a batch-1 decode step.

At batch 1 a decode step is a stream of weight reads (15 GB per step for an 8B model): the time is how close each
projection gets to the memory bandwidth. cuBLAS's kernels for one row reach 2.0-2.8 TB/s on an H100 (its worst case
is the small square o_proj, 4096 x 4096), partly because they split K and reduce in a second kernel. This kernel gives
each program BLOCK_N whole rows of W, streams them in BLOCK_K column tiles into a float32 accumulator of the tile's
shape, and reduces once at the end: no split, no second kernel, thousands of programs in flight.

Measured on an H100 (bf16, one row, inside a CUDA graph, over 32 copies of each weight so none sits in L2; per call),
cuBLAS -> this kernel (`benchmarks/gemv_bench.py`; benchmarks/results/2026-11-23-h100-gemv-bench.json):
    Llama-3-8B  q/k/v 6144 x 4096: 21.1 -> 20.4 us; o 4096 x 4096: 16.6 -> 13.7; gate/up 28672 x 4096: 83.1 -> 79.1;
                down 4096 x 14336: 45.0 -> 42.1; lm_head 128256 x 4096: 381 -> 344 (3.06 TB/s)
    Qwen2-7B    q/k/v 4608 x 3584: 14.2 -> 13.2; o: 11.8 -> 10.9; gate/up: 98.0 -> 90.2; down: 55.9 -> 49.5
A whole batch-1 step of the 8B model: 6.22 -> 5.88 ms per token (with the rotary kernel's K/V store; H100; docs/performance.md).
On the H100 one fixed configuration (4 rows, 512 columns, 4 warps, 3 stages) was within 3 % of the best of 72
(`--sweep`) on average over those shapes and 10 % in the worst (8B q/k/v); on an H200 two shapes gain from their
own (`config_for`). The configuration depends only on the shape, so the summation order, hence the output, is the
same on every run.

Inside CUDA graphs the kernel takes part in programmatic dependent launch (`kernels/pdl.py`): it loads its first
weight tile, then waits for the kernel before it; each program keeps the next tile in flight while it uses the
current one. On an H200 (per call, graphs of 32 calls, with PDL -> without): q/k/v 14.7 / 15.6 us, o 10.0 / 11.6,
gate/up 60.3 / 61.6, down 30.1 / 30.9 (3.4-3.9 TB/s; benchmarks/results/2026-12-04-h200-s7-pdl-graphs-gemm.json).

Numerics: products and sums in float32 (for half inputs as for float32 ones), bias added in float32, one rounding to
the output dtype: what cuBLAS does, in another summation order, so results agree to the output dtype's rounding.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch; CPU installs may lack it
    triton = None

from trt_gateway.engine.kernels import pdl

BLOCK_N, BLOCK_K, NUM_WARPS, NUM_STAGES = 4, 512, 4, 3
# Two shapes do better with their own configuration (H200 sweep of `benchmarks/fp8_gemm_bench.py`, 2026-12-04,
# per call with PDL, the fixed one -> this one): a wide fused q/k/v (N a bit over K) 15.6 -> 14.5 us with two rows
# of 1,024 columns per program, and many rows of a short K (gate/up, lm_head) 63.1 -> 60.8 us with 16 rows of 256.
WIDE_CONFIG = (16, 256, 4, 3)
QKV_CONFIG = (2, 1024, 4, 3)


def config_for(n: int, k: int) -> tuple[int, int, int, int]:
    if n >= 16384 and k < 8192:
        return WIDE_CONFIG
    if k < n < 2 * k:
        return QKV_CONFIG
    return BLOCK_N, BLOCK_K, NUM_WARPS, NUM_STAGES


if triton is not None:

    @triton.jit
    def _gemv_kernel(
        x_ptr,  # [K], unit stride
        w_ptr,  # [N, K], unit column stride
        bias_ptr,  # [N] or a dummy when not HAS_BIAS
        y_ptr,  # [N]
        n,
        k,
        stride_w,
        HAS_BIAS: tl.constexpr,
        EVEN_K: tl.constexpr,  # k % BLOCK_K == 0: no column mask in the loop
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        PDL: tl.constexpr,
    ):
        pdl.launch_dependents(PDL)
        rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok = rows < n
        # Rows past n read row n - 1 again instead of masking: an unmasked load in the loop, results discarded.
        w_rows = w_ptr + tl.minimum(rows, n - 1).to(tl.int64)[:, None] * stride_w
        cols = tl.arange(0, BLOCK_K)
        acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
        if EVEN_K:
            # The next weight tile is loaded before the current one is used (two tiles in flight per program), and
            # the first before waiting on the previous kernel: weights are constants (kernels/pdl.py).
            w = tl.load(w_rows + cols[None, :])
            pdl.wait(PDL)
            for k0 in range(BLOCK_K, k, BLOCK_K):
                w_next = tl.load(w_rows + (k0 + cols)[None, :])
                x = tl.load(x_ptr + (k0 - BLOCK_K) + cols)
                acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
                w = w_next
            x = tl.load(x_ptr + (k - BLOCK_K) + cols)
            acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
        else:
            pdl.wait(PDL)
            for k0 in range(0, k, BLOCK_K):
                col_ok = k0 + cols < k
                w = tl.load(w_rows + (k0 + cols)[None, :], mask=col_ok[None, :], other=0.0)
                x = tl.load(x_ptr + k0 + cols, mask=col_ok, other=0.0)
                acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
        y = tl.sum(acc, axis=1)
        if HAS_BIAS:
            y += tl.load(bias_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
        tl.store(y_ptr + rows, y.to(y_ptr.dtype.element_ty), mask=row_ok)


def gemv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    config: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """x [1, K] @ weight [N, K].T (+ bias [N]) -> [1, N] in x's dtype, like F.linear for one row.

    weight: unit stride along K, any row stride (e.g. a part of a fused projection); x, weight and bias of one dtype.
    config: (BLOCK_N, BLOCK_K, num_warps, num_stages) instead of `config_for(N, K)` (`gemv_bench.py --sweep`).
    """
    if triton is None:
        raise RuntimeError("triton is not installed")
    if x.dim() != 2 or x.shape[0] != 1 or weight.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"gemv takes x [1, K] and weight [N, K], got {tuple(x.shape)} and {tuple(weight.shape)}")
    n, k = weight.shape
    if weight.stride(1) != 1:
        raise ValueError("weight must have unit stride along K")
    if x.dtype != weight.dtype or (bias is not None and (bias.dtype != x.dtype or bias.shape != (n,))):
        got = "none" if bias is None else f"{bias.dtype} {tuple(bias.shape)}"
        raise ValueError(f"x, weight and bias must share a dtype and bias be [{n}]: {x.dtype}, {weight.dtype}, {got}")
    block_n, block_k, warps, stages = config or config_for(n, k)
    x = x.contiguous()
    y = torch.empty(1, n, dtype=x.dtype, device=x.device)
    if n == 0:
        return y
    _gemv_kernel[(triton.cdiv(n, block_n),)](
        x,
        weight,
        bias if bias is not None else y,
        y,
        n,
        k,
        weight.stride(0),
        HAS_BIAS=bias is not None,
        EVEN_K=k % block_k == 0,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        num_warps=warps,
        num_stages=stages,
        **pdl.launch(x.device),
    )
    return y
