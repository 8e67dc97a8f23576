"""SwiGLU gating of the Llama MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def silu_and_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """gate, up: [T, intermediate] -> [T, intermediate]"""
    return F.silu(gate) * up
