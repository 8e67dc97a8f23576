"""SwiGLU gating of the Llama MLP, over the fused gate_up projection's output [T, 2 * intermediate]."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def silu_and_mul(gate_up: torch.Tensor, use_kernels: bool = False) -> torch.Tensor:
    """gate_up: [T, 2I] (gate columns first, then up) -> silu(gate) * up [T, I]"""
    if use_kernels:
        from trt_gateway.engine.kernels.activation import silu_and_mul as fused

        return fused(gate_up)
    half = gate_up.shape[-1] // 2
    return F.silu(gate_up[:, :half]) * gate_up[:, half:]
