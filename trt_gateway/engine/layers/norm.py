"""RMSNorm, computed in float32 as HF Llama does, then cast back to the activation dtype before the weight multiply.

`forward_add` fuses the residual add that precedes every norm in a decoder layer (x + residual, then the norm of
the sum): one pass over the activations instead of three on the GPU (`kernels.rmsnorm`), the same arithmetic as HF's
separate add and norm (the sum is rounded to the activation dtype before it is normalised).
"""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float, use_kernels: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.use_kernels = use_kernels  # Triton kernels (CUDA only); else plain torch
        self.weight = nn.Parameter(torch.empty(hidden_size), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [T, hidden] -> [T, hidden]"""
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
        return _rms_norm(total, self.weight, self.eps), total


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(dtype)
