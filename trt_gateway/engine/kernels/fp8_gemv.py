"""y = x @ (q * scale[:, None]).T (+ bias) for one bfloat16 row x and FP8 weights: batch-1 decode with FP8 weights.

At batch 1 a step reads every weight once, so FP8 halves its bytes. `torch._scaled_mm` would first quantize the row
(a reduction and a cast: two more launches per projection) and run a GEMM tile built for many rows; this kernel
reads the FP8 weights and the bfloat16 row as they are, multiplies in float32, and applies the channel scale (and
bias) once per output: weight-only FP8 (W8A16), so the row itself is not rounded to FP8.

Layout as in `kernels/gemv.py`: each program owns BLOCK_N whole rows of q and walks K in BLOCK_K tiles into a
float32 accumulator of the tile's shape, reduced once at the end. The configuration depends on the shape
(`config_for`), picked from two sweeps of `benchmarks/fp8_gemm_bench.py` on an H200 (2026-12-04; per call, us,
over weights not in L2; the first fixed configuration 4x512x4x3 -> the chosen one): Llama-3-8B q/k/v 6144 x 4096:
13.6 -> 9.4; o 4096 x 4096: 8.7 -> 7.3; gate/up 28672 x 4096: 45.6 -> 36.9; down 4096 x 14336: 25.9 -> 19.1. That
is 2.3-3.2 TB/s of weight bytes, against 3.0-3.8 TB/s for the bf16 GEMV: per byte this kernel converts and
multiplies twice as many elements, and the FP8 -> float32 conversions, not the memory, set its pace (docs/performance.md).
Inside CUDA graphs it takes part in programmatic dependent launch (`kernels/pdl.py`): 0.6-0.8 us less per call on
the small projections (q/k/v 9.0, o 6.6, gate/up 37.5, down 18.6 us on an H200 with it).
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch
    triton = None

from trt_gateway.engine.kernels import pdl

# (BLOCK_N, BLOCK_K, num_warps, num_stages); the benchmark sweeps alternatives through `fp8_gemv(config=...)`.
CONFIG = (8, 1024, 4, 3)  # o_proj, down_proj: few rows, or long K
WIDE_CONFIG = (16, 256, 4, 4)  # many rows of a short K (gate/up): more rows per program, shorter tiles
MID_CONFIG = (16, 512, 8, 3)  # q/k/v


def config_for(n: int, k: int) -> tuple[int, int, int, int]:
    if k >= 8192:
        return CONFIG
    return WIDE_CONFIG if n >= 16384 else MID_CONFIG if n > k else CONFIG


if triton is not None:

    @triton.jit
    def _fp8_gemv_kernel(
        x_ptr,  # [K] bfloat16, unit stride
        w_ptr,  # [N, K] float8_e4m3fn, unit column stride
        scale_ptr,  # [N] float32
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
        # Rows past n read row n - 1 again instead of masking: unmasked loads in the loop, results discarded.
        w_rows = w_ptr + tl.minimum(rows, n - 1).to(tl.int64)[:, None] * stride_w
        acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
        # Unlike kernels/gemv.py, no weight tile is loaded before the wait: holding a second tile in registers
        # (2x the registers at 8 x 1024) cost this kernel 30-45 % on an H200, more than the overlap gained.
        pdl.wait(PDL)
        for k0 in range(0, k, BLOCK_K):
            cols = k0 + tl.arange(0, BLOCK_K)
            if EVEN_K:
                w = tl.load(w_rows + cols[None, :])
                x = tl.load(x_ptr + cols)
            else:
                col_ok = cols < k
                w = tl.load(w_rows + cols[None, :], mask=col_ok[None, :], other=0.0)
                x = tl.load(x_ptr + cols, mask=col_ok, other=0.0)
            acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
        y = tl.sum(acc, axis=1) * tl.load(scale_ptr + rows, mask=row_ok, other=0.0)
        if HAS_BIAS:
            y += tl.load(bias_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
        tl.store(y_ptr + rows, y.to(y_ptr.dtype.element_ty), mask=row_ok)


def fp8_gemv(
    x: torch.Tensor,
    q: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    config: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """x [1, K] @ (q [N, K] float8_e4m3fn * scale [N]).T (+ bias [N]) -> [1, N] in x's dtype."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    if x.dim() != 2 or x.shape[0] != 1 or q.dim() != 2 or x.shape[1] != q.shape[1]:
        raise ValueError(f"fp8_gemv takes x [1, K] and q [N, K], got {tuple(x.shape)} and {tuple(q.shape)}")
    n, k = q.shape
    if q.stride(1) != 1 or q.dtype != torch.float8_e4m3fn:
        raise ValueError(f"q must be float8_e4m3fn with unit stride along K, got {q.dtype}, strides {q.stride()}")
    if scale.shape != (n,) or scale.dtype != torch.float32 or not scale.is_contiguous():
        raise ValueError(f"scale must be a contiguous float32 [{n}], got {scale.dtype} {tuple(scale.shape)}")
    block_n, block_k, warps, stages = config or config_for(n, k)
    x = x.contiguous()
    y = torch.empty(1, n, dtype=x.dtype, device=x.device)
    if n == 0:
        return y
    _fp8_gemv_kernel[(triton.cdiv(n, block_n),)](
        x,
        q,
        scale,
        bias if bias is not None else y,
        y,
        n,
        k,
        q.stride(0),
        HAS_BIAS=bias is not None,
        EVEN_K=k % block_k == 0,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        num_warps=warps,
        num_stages=stages,
        **pdl.launch(x.device),
    )
    return y
