"""FP8 (E4M3) maths: per-output-channel weight scales, per-token dynamic activation scales, and the matmul.

A projection y = x @ W.T keeps W as `q` [N, K] float8_e4m3fn and `scale` [N] float32 with W ~= q * scale[:, None];
each row's scale maps its largest |w| to 448, E4M3's largest finite value, so every row uses the whole range and no
weight saturates. E4M3 keeps 3 mantissa bits, so each weight is rounded to within 2^-4 of itself (relative).
Measured on normal weights (tests/unit/test_fp8_quantization.py): a weight matrix's relative (Frobenius) error is
about 2.6 %, a matmul's output about 2.7 % with the row in bfloat16 and 3.7 % with the row quantized too; bfloat16
weights and inputs are at 0.3 %. What that does to a model's logits and greedy tokens is in docs/engine.md#fp8.

Two ways to compute it (both Hopper-only, see `require_fp8_device`):
- several rows (prefill, batched decode): each row of x is quantized with its own scale (`quantize_per_token`,
  dynamic: no calibration) and `torch._scaled_mm` multiplies FP8 by FP8 on the tensor cores, applying both scales in
  the epilogue (row-wise scaling), out in bfloat16;
- one row inside CUDA graphs (batch-1 decode): the Triton GEMV in `kernels/fp8_gemv.py` reads the FP8 weights and
  the bfloat16 row as is (no activation quantization: at one row the time is the weight bytes, not the arithmetic),
  then multiplies each output by its channel's scale.

The pure functions here run on any device (torch's float8 casts work on the CPU), so the maths is tested in CI;
`fp8_reference` is the float32 computation both GPU paths are compared with.
"""

from __future__ import annotations

import torch

from trt_gateway.engine.engine_config import EngineConfigError

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # torch.finfo(float8_e4m3fn).max
# A row of zeros gets this scale instead of 0, so dividing by it is defined and the row quantizes to zeros.
MIN_SCALE = 1e-12
# torch._scaled_mm needs K and N to be multiples of 16; a projection of another shape stays in the model dtype.
ALIGN = 16


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [N, K] (any float dtype) -> (q [N, K] float8_e4m3fn, scale [N] float32), weight ~= q * scale[:, None]."""
    w = weight.float()
    scale = (w.abs().amax(dim=1) / FP8_MAX).clamp(min=MIN_SCALE)  # [N]
    q = (w / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q, scale


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [T, K] -> (q [T, K] float8_e4m3fn, scale [T, 1] float32): each row scaled to the full E4M3 range.

    The torch reference of `kernels/fp8_quant.quantize_per_token`, which does the same in one pass."""
    xf = x.float()
    scale = (xf.abs().amax(dim=1, keepdim=True) / FP8_MAX).clamp(min=MIN_SCALE)  # [T, 1]
    return (xf / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """q [N, K] float8 and scale [N] (per channel) or [N, 1] -> float32 [N, K]."""
    return q.float() * scale.float().reshape(-1, 1)


def fp8_reference(
    x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None, *, quantize_x: bool = True
) -> torch.Tensor:
    """What `fp8_linear` computes, in float32 on any device: x [T, K] -> [T, N] float32.

    quantize_x: the several-rows path (activations rounded to FP8 per token); False: the one-row GEMV's maths."""
    xf = dequantize(*quantize_per_token(x)) if quantize_x else x.float()
    y = xf @ dequantize(q, scale).T
    return y if bias is None else y + bias.float()


def fp8_linear(
    x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, *, one_row: bool, kernels: bool
) -> torch.Tensor:
    """x [T, K] bfloat16 @ (q [N, K] float8 * scale [N]).T (+ bias [N]) -> [T, N] bfloat16, on a Hopper GPU.

    one_row: T == 1 inside CUDA graphs (the caller decides, as for the bf16 GEMV): the Triton FP8 GEMV.
    kernels: the Triton kernels may run (per-token quantization in one pass instead of five torch ops)."""
    if one_row:
        from trt_gateway.engine.kernels.fp8_gemv import fp8_gemv

        return fp8_gemv(x, q, scale, bias)
    if kernels:
        from trt_gateway.engine.kernels.fp8_quant import quantize_per_token as quantize_tokens

        xq, x_scale = quantize_tokens(x)
    else:
        xq, x_scale = quantize_per_token(x)
    # mat2 must be column-major: q is [N, K] row-major, so q.T is [K, N] column-major with no copy.
    y = torch._scaled_mm(xq, q.T, scale_a=x_scale, scale_b=scale.view(1, -1), out_dtype=x.dtype)
    return y if bias is None else y + bias


def fp8_shape_ok(out_features: int, in_features: int) -> bool:
    return out_features % ALIGN == 0 and in_features % ALIGN == 0


def fp8_unsupported_reason(device: torch.device) -> str | None:
    """Why FP8 matmuls cannot run on `device`, or None when they can (CUDA, compute capability >= 9.0)."""
    if device.type != "cuda":
        return f"FP8 needs an NVIDIA GPU of compute capability 9.0 or newer (Hopper); the engine runs on {device.type}"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (9, 0):
        name = torch.cuda.get_device_name(device)
        return f"FP8 needs compute capability 9.0 or newer (Hopper); {name} has {major}.{minor}"
    return None


def require_fp8_device(device: torch.device) -> None:
    """Raise EngineConfigError(field="quantization") unless FP8 matmuls can run on `device`."""
    reason = fp8_unsupported_reason(device)
    if reason is not None:
        raise EngineConfigError(reason, field="quantization")
