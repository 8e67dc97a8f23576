"""LoRA slot storage: the stacked per-slot A/B weights of every target `Linear` of a model, and writing a slot.

The maths that reads the slots during a forward pass is `layers/lora.py`; the registry deciding which adapter sits in
which slot is `lora/registry.py`.
"""

from __future__ import annotations

import torch
from torch import nn

from trt_gateway.engine.layers.linear import Linear
from trt_gateway.engine.lora.adapter import TARGET_MODULES, LoraWeights


class LoraSlots:
    """The stacked slot weights of every target `Linear` of a model, and the one way to write a slot.

    Only the engine thread writes slots, and only a slot no running sequence uses (the registry guarantees it), so a
    write never races a forward pass.
    """

    def __init__(self, model: nn.Module, num_slots: int, max_rank: int, dtype: torch.dtype, device: torch.device) -> None:
        self.num_slots = num_slots
        self.max_rank = max_rank
        self.layers: dict[str, Linear] = target_linears(model)
        for layer in self.layers.values():
            layer.lora_a = torch.zeros(num_slots + 1, max_rank, layer.in_features, dtype=dtype, device=device)
            layer.lora_b = torch.zeros(num_slots + 1, layer.out_features, max_rank, dtype=dtype, device=device)

    @property
    def module_shapes(self) -> dict[str, tuple[int, int]]:
        """Engine module name -> (in_features, out_features): what an adapter's tensors are checked against."""
        return {name: (m.in_features, m.out_features) for name, m in self.layers.items()}

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for m in self.layers.values() for t in (m.lora_a, m.lora_b) if t is not None)

    @torch.inference_mode()
    def write(self, slot: int, weights: LoraWeights) -> None:
        """Zero slot `slot` in every layer, then copy the adapter's modules into its first `rank` columns."""
        if not 1 <= slot <= self.num_slots:
            raise IndexError(f"slot {slot} is outside 1..{self.num_slots}")
        r = weights.rank
        for name, layer in self.layers.items():
            a, b = layer.lora_a, layer.lora_b
            assert a is not None and b is not None  # allocated in __init__
            a[slot].zero_()
            b[slot].zero_()
            if name in weights.a:
                a[slot, :r].copy_(weights.a[name])
                b[slot, :, :r].copy_(weights.b[name])


def target_linears(model: nn.Module) -> dict[str, Linear]:
    """The model's q/k/v/o/gate/up/down projections by full module name (`model.layers.0.self_attn.q_proj`)."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, Linear) and name.rsplit(".", 1)[-1] in TARGET_MODULES
    }
