"""RMSNorm, computed in float32 as HF Llama does, then cast back to the activation dtype before the weight multiply.

`forward_add` fuses the residual add that precedes every norm in a decoder layer (x + residual, then the norm of
the sum): one pass over the activations instead of three on the GPU (`kernels.rmsnorm`), the same arithmetic as HF's
separate add and norm (the sum is rounded to the activation dtype before it is normalised).

`unit_offset` is Gemma's variant: the weight is stored as an offset from one, and the float32 result is scaled by
(1 + weight) before the cast, as HF's GemmaRMSNorm does. It has no kernel: the torch path runs on every device.
"""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float, use_kernels: bool = False, unit_offset: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.unit_offset = unit_offset
        self.use_kernels = use_kernels and not unit_offset  # Triton kernels (CUDA only); else plain torch
        self.weight = nn.Parameter(torch.empty(hidden_size), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., hidden] -> [..., hidden] (the kernel takes 2-D x only)"""
        if self.unit_offset:
            return _gemma_rms_norm(x, self.weight, self.eps)
        if self.use_kernels:
            from trt_gateway.engine.kernels.rmsnorm import rms_norm

            return rms_norm(x, self.weight, self.eps)
        return _rms_norm(x, self.weight, self.eps)

    def forward_add(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (norm(x + residual), x + residual). x and residual are consumed: the kernel may overwrite them."""
        if self.use_kernels:
            from trt_gateway.engine.kernels.rmsnorm import add_rms_norm

            return add_rms_norm(x, residual, self.weight, self.eps)
        total = x + residual
        return self.forward(total), total


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(dtype)


def _gemma_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return (x32 * (1.0 + weight.float())).to(x.dtype)
