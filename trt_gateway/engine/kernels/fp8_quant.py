"""Per-token dynamic FP8 quantization of activations in one pass: x [T, K] -> (q [T, K] float8_e4m3fn, scale [T, 1]).

The torch reference (`engine/quantization/fp8.quantize_per_token`) takes five launches (abs, amax, divide, clamp,
cast) and three reads of x; here one program per row loads it once, reduces |x| to its maximum, and stores the
scaled FP8 row and its scale. Same formula, float32 throughout: on an H200 the scales came out within a few
float32 ulps of torch's (not bit-equal: the division by the constant 448 compiles to another instruction), hence an
element can land one FP8 step away from the reference; the GPU test bounds both.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch
    triton = None

from trt_gateway.engine.kernels import pdl

if triton is not None:

    @triton.jit
    def _quant_kernel(x_ptr, q_ptr, scale_ptr, k, stride_x, stride_q, BLOCK_K: tl.constexpr, PDL: tl.constexpr):
        pdl.launch_dependents(PDL)
        pdl.wait(PDL)  # x comes from the kernel before (kernels/pdl.py)
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK_K)
        ok = cols < k
        x = tl.load(x_ptr + row * stride_x + cols, mask=ok, other=0.0).to(tl.float32)
        # div_rn: IEEE division, as torch divides (Triton's `/` on float32 is an approximate division)
        scale = tl.maximum(tl.math.div_rn(tl.max(tl.abs(x), axis=0), 448.0), 1e-12)
        q = tl.clamp(tl.math.div_rn(x, scale), -448.0, 448.0)
        tl.store(q_ptr + row * stride_q + cols, q.to(q_ptr.dtype.element_ty), mask=ok)
        tl.store(scale_ptr + row, scale)


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [T, K] (unit stride along K) -> (q [T, K] float8_e4m3fn, scale [T, 1] float32)."""
    if triton is None:
        raise RuntimeError("triton is not installed")
    if x.dim() != 2 or x.stride(1) != 1:
        raise ValueError(f"x must be [T, K] with unit stride along K, got {tuple(x.shape)} strides {x.stride()}")
    t, k = x.shape
    q = torch.empty(t, k, dtype=torch.float8_e4m3fn, device=x.device)
    scale = torch.empty(t, 1, dtype=torch.float32, device=x.device)
    if t == 0:
        return q, scale
    block = triton.next_power_of_2(k)
    warps = 4 if block <= 2048 else 8 if block <= 8192 else 16
    _quant_kernel[(t,)](
        x, q, scale, k, x.stride(0), q.stride(0), BLOCK_K=block, num_warps=warps, **pdl.launch(x.device)
    )
    return q, scale
