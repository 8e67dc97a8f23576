"""The gated MLP's activation over the fused gate_up projection's output [T, 2 * intermediate]: SwiGLU (Llama,
Mistral, Qwen) or GeGLU with tanh-approximated GELU (Gemma; no kernel, the torch path runs on every device)."""

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


def gelu_tanh_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """gate_up: [T, 2I] -> gelu_tanh(gate) * up [T, I], as HF's gelu_pytorch_tanh."""
    half = gate_up.shape[-1] // 2
    return F.gelu(gate_up[:, :half], approximate="tanh") * gate_up[:, half:]
