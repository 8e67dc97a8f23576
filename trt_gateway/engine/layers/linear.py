"""The one projection layer every model weight matrix goes through.

q/k/v/o and gate/up/down are all `Linear`, never `nn.Linear`, so a later batched multi-LoRA layer can wrap or
subclass this single class (adding `x @ A[slot] @ B[slot]` per token) without touching the model code. Parameter
names (`weight`, `bias`) match `nn.Linear`, hence the HF checkpoint names load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        # torch.empty: the engine builds modules on the meta device and assigns checkpoint tensors afterwards, so
        # there is nothing to initialise.
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_features), requires_grad=False) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [T, in_features] -> [T, out_features]"""
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
