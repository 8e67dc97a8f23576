"""Turning a loaded model's projections into FP8 ones: quantizing bf16 weights at load, or adopting the scales of an
FP8 checkpoint.

What is quantized: the seven projections of every decoder layer (q/k/v/o, gate/up/down), which hold all but the
embedding and lm_head bytes of a Llama. lm_head stays in the model dtype (the logits are where rounding shows most,
and vLLM and llm-compressor leave it unquantized too), as do the embedding and the norms. Call before
`fuse_projections`, which concatenates the parts' FP8 weights and their scales.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import nn

from trt_gateway.engine.layers.linear import Linear
from trt_gateway.engine.quantization.fp8 import fp8_shape_ok, quantize_per_channel

logger = logging.getLogger(__name__)

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def quantizable(model: nn.Module) -> dict[str, Linear]:
    """The decoder projections by full module name (`model.layers.0.self_attn.q_proj`)."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, Linear) and name.rsplit(".", 1)[-1] in PROJECTIONS
    }


@torch.inference_mode()
def quantize_linears(model: nn.Module) -> int:
    """Quantize every decoder projection of a loaded model to FP8 in place (per output channel); -> how many.

    One projection at a time, so the peak memory is the model plus one projection's FP8 copy."""
    count = 0
    for name, layer in quantizable(model).items():
        if not fp8_shape_ok(layer.out_features, layer.in_features):
            logger.info("fp8: %s stays unquantized: %d x %d is not a multiple of 16", name, *layer.weight.shape)
            continue
        q, scale = quantize_per_channel(layer.weight)
        layer.weight = nn.Parameter(q, requires_grad=False)
        layer.weight_scale = scale
        count += 1
    return count


def adopt_scales(model: nn.Module, scales: Mapping[str, torch.Tensor]) -> None:
    """Attach an FP8 checkpoint's channel scales (module name -> [N] float32) to the modules holding its FP8 weights."""
    for name, scale in scales.items():
        layer = model.get_submodule(name)
        if not isinstance(layer, Linear):
            raise TypeError(f"{name} holds an FP8 weight but is a {type(layer).__name__}, not a projection")
        layer.weight_scale = scale
