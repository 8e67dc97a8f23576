"""The one projection layer every model weight matrix goes through.

q/k/v/o and gate/up/down are all `Linear`, never `nn.Linear`. When the engine serves LoRA adapters, `LoraSlots`
gives each target projection stacked slot weights (`lora_a`, `lora_b`) and every step passes a `LoraBatch` saying
which slot each token uses; the layer then adds the batched LoRA term (`lora/batched.py`) to the shared base matmul.
Parameter names (`weight`, `bias`) match `nn.Linear`, hence the HF checkpoint names load unchanged; the slot tensors
are plain attributes, not part of the state dict.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trt_gateway.engine.lora.batched import LoraBatch, lora_delta


class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        # torch.empty: the engine builds modules on the meta device and assigns checkpoint tensors afterwards, so
        # there is nothing to initialise.
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_features), requires_grad=False) if bias else None
        self.lora_a: torch.Tensor | None = None  # [slots + 1, max_rank, in_features], set by LoraSlots
        self.lora_b: torch.Tensor | None = None  # [slots + 1, out_features, max_rank]

    def forward(self, x: torch.Tensor, lora: LoraBatch | None = None) -> torch.Tensor:
        """x: [T, in_features] -> [T, out_features]; `lora` (None: no token has an adapter) adds each token's own."""
        y = F.linear(x, self.weight, self.bias)
        if lora is not None and self.lora_a is not None and self.lora_b is not None:
            y = y + lora_delta(x, self.lora_a, self.lora_b, lora)
        return y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
