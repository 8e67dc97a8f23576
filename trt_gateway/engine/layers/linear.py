"""The one projection layer every model weight matrix goes through.

q/k/v/o and gate/up/down are all `Linear`, never `nn.Linear`. When the engine serves LoRA adapters, `LoraSlots`
gives each target projection stacked slot weights (`lora_a`, `lora_b`) and every step passes a `LoraBatch` saying
which slot each token uses; the layer then adds the batched LoRA term (`layers/lora.py`) to the shared base matmul.
Parameter names (`weight`, `bias`) match `nn.Linear`, hence the HF checkpoint names load unchanged; the slot tensors
are plain attributes, not part of the state dict.

`use_kernels` (set on every Linear of a model built for CUDA with the Triton kernels) computes one-row inputs, the
batch-1 decode step, with `kernels.gemv` inside CUDA graphs, where it streams the weights faster than cuBLAS does for
a single row.

`fuse_linears` concatenates projections that read the same input (q/k/v, gate/up) into one weight and turns each
part's weight into a view of it: one matmul instead of three (fewer launches, a better-shaped GEMM at small batch),
no extra memory, and the parts keep their names, so checkpoints, LoRA slots and PEFT names are unchanged.

FP8 (`quantization/`): a projection whose `weight_scale` is set holds `weight` in float8_e4m3fn with one float32
scale per output channel and computes through `quantization.fp8.fp8_linear`; its LoRA term stays in the model dtype,
computed from the unquantized input.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn

from trt_gateway.engine.layers.lora import LoraBatch, lora_delta
from trt_gateway.engine.quantization.fp8 import fp8_linear

_ONE_ROW_GEMV: ContextVar[bool] = ContextVar("one_row_gemv", default=False)


@contextmanager
def one_row_gemv() -> Iterator[None]:
    """One-row projections of models with the kernels on use the Triton GEMV in this block (see `linear`)."""
    token = _ONE_ROW_GEMV.set(True)
    try:
        yield
    finally:
        _ONE_ROW_GEMV.reset(token)


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    use_kernels: bool,
    weight_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """F.linear, or the Triton GEMV for a single row with the kernels on, inside `one_row_gemv()`: the CUDA graphs'
    warm-up and capture. With `weight_scale` (FP8 weights), the FP8 matmul or the FP8 GEMV on the same terms.

    Only in graphs: launched eagerly, a Triton kernel costs tens of microseconds of Python per call, cuBLAS a few,
    and a batch-1 step run eagerly (LoRA adapters, draft-model proposals) is bound by launches, not bandwidth. The
    row count is a host-side shape, so the choice is fixed per graph bucket. The GEMV needs rows of unit stride,
    which every loaded weight has; anything else goes to cuBLAS rather than failing a request."""
    one_row = use_kernels and x.shape[0] == 1 and weight.stride(1) == 1 and _ONE_ROW_GEMV.get()
    if weight_scale is not None:
        return fp8_linear(x, weight, weight_scale, bias, one_row=one_row, kernels=use_kernels)
    if one_row:
        from trt_gateway.engine.kernels.gemv import gemv

        return gemv(x, weight, bias)
    return F.linear(x, weight, bias)


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
        self.weight_scale: torch.Tensor | None = None  # [out_features] float32 when `weight` is FP8
        self.use_kernels = False

    def forward(self, x: torch.Tensor, lora: LoraBatch | None = None) -> torch.Tensor:
        """x: [T, in_features] -> [T, out_features]; `lora` (None: no token has an adapter) adds each token's own."""
        y = linear(x, self.weight, self.bias, self.use_kernels, self.weight_scale)
        delta = self.lora_term(x, lora)
        return y if delta is None else y + delta

    def lora_term(self, x: torch.Tensor, lora: LoraBatch | None) -> torch.Tensor | None:
        """The batched LoRA term of x [T, in] -> [T, out], or None when no token of the step has an adapter."""
        if lora is None or self.lora_a is None or self.lora_b is None:
            return None
        return lora_delta(x, self.lora_a, self.lora_b, lora)

    def extra_repr(self) -> str:
        fp8 = ", fp8" if self.weight_scale is not None else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}{fp8}"


class FusedLinear:
    """Projections sharing one input, computed as one matmul. Not a module: the parts stay the modules."""

    def __init__(self, parts: list[Linear]) -> None:
        self.parts = parts
        self.sizes = [p.out_features for p in parts]
        scales = [p.weight_scale for p in parts]
        if any(s is None for s in scales) and not all(s is None for s in scales):
            raise ValueError("fused projections must all be FP8 or all be unquantized")
        with torch.no_grad():
            weight = _cat_rows([p.weight for p in parts])
            scale = torch.cat([s for s in scales if s is not None]) if scales[0] is not None else None
            biases: list[torch.Tensor] = [p.bias for p in parts if p.bias is not None]
            bias = torch.cat(biases) if len(biases) == len(parts) else None
        if biases and bias is None:
            raise ValueError("fused projections must all have a bias or all have none")
        start = 0
        for part, size in zip(parts, self.sizes, strict=True):
            # The part's own parameter becomes a view of the fused one, so the separate copy is freed.
            part.weight = nn.Parameter(weight[start : start + size], requires_grad=False)
            if scale is not None:
                part.weight_scale = scale[start : start + size]
            if bias is not None:
                part.bias = nn.Parameter(bias[start : start + size], requires_grad=False)
            start += size
        self.weight = weight
        self.bias = bias
        self.weight_scale = scale
        self.use_kernels = parts[0].use_kernels

    def __call__(self, x: torch.Tensor, lora: LoraBatch | None = None) -> torch.Tensor:
        """x: [T, in] -> [T, sum(out)], each part's columns in order, each with its own LoRA term."""
        y = linear(x, self.weight, self.bias, self.use_kernels, self.weight_scale)
        if lora is not None:
            start = 0
            for part, size in zip(self.parts, self.sizes, strict=True):
                delta = part.lora_term(x, lora)
                if delta is not None:
                    y[:, start : start + size] += delta
                start += size
        return y


def _cat_rows(weights: list[torch.Tensor]) -> torch.Tensor:
    """torch.cat along dim 0; FP8 tensors go through a byte view (cat has no float8 kernel on every torch build)."""
    if weights[0].dtype != torch.float8_e4m3fn:
        return torch.cat(weights)
    return torch.cat([w.view(torch.uint8) for w in weights]).view(torch.float8_e4m3fn)
