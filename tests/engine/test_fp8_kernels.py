"""FP8 matmuls on a Hopper GPU against their float32 references (`quantization.fp8.fp8_reference`), and LoRA on top
of an FP8 projection. Skipped without one; the LoRA case also runs on the CPU with the FP8 maths emulated.

Tolerances: `_scaled_mm` (several rows) within 1 % relative of the reference computed from the same FP8 operands
(the output's bfloat16 rounding is 0.4 %; the rest is accumulation order); the FP8 GEMV likewise; the Triton
per-token quantization matches the torch one: scales within 1e-6 relative, an element at most one FP8 step away.
"""

from __future__ import annotations

import pytest
import torch

from trt_gateway.engine.layers import linear as linear_module
from trt_gateway.engine.layers.linear import Linear, one_row_gemv
from trt_gateway.engine.layers.lora import LoraBatch, lora_delta
from trt_gateway.engine.quantization.fp8 import (
    fp8_linear,
    fp8_reference,
    fp8_unsupported_reason,
    quantize_per_channel,
    quantize_per_token,
)

HOPPER = torch.cuda.is_available() and fp8_unsupported_reason(torch.device("cuda")) is None
needs_hopper = [pytest.mark.gpu, pytest.mark.skipif(not HOPPER, reason="FP8 needs a Hopper GPU")]


def hopper(test):
    for mark in needs_hopper:
        test = mark(test)
    return test


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def operands(m: int, n: int, k: int, bias: bool, device: str = "cuda"):
    gen = torch.Generator().manual_seed(m * 7 + n + k)
    q, scale = quantize_per_channel(torch.randn(n, k, generator=gen) * 0.02)
    x = torch.randn(m, k, generator=gen).bfloat16()
    b = torch.randn(n, generator=gen).bfloat16() if bias else None
    return x.to(device), q.to(device), scale.to(device), None if b is None else b.to(device)


@pytest.mark.parametrize(("m", "n", "k"), [(1, 96, 64), (7, 4096, 1024), (300, 512, 4096), (64, 14336, 4096)])
@pytest.mark.parametrize("kernels", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@hopper
def test_scaled_mm_path_matches_the_reference(m, n, k, kernels, bias):
    x, q, scale, b = operands(m, n, k, bias)
    out = fp8_linear(x, q, scale, b, one_row=False, kernels=kernels)
    assert out.shape == (m, n) and out.dtype == torch.bfloat16
    assert rel(out, fp8_reference(x, q, scale, b)) <= 0.01


@pytest.mark.parametrize(("n", "k"), [(6144, 4096), (4096, 14336), (100, 80)])
@hopper
def test_one_row_gemv_path_matches_the_reference(n, k):
    x, q, scale, b = operands(1, n, k, True)
    out = fp8_linear(x, q, scale, b, one_row=True, kernels=True)
    assert rel(out, fp8_reference(x, q, scale, b, quantize_x=False)) <= 0.01


@pytest.mark.parametrize("shape", [(1, 64), (5, 4096), (300, 14336), (3, 1000)])
@hopper
def test_triton_per_token_quantization_equals_torch(shape):
    from trt_gateway.engine.kernels.fp8_quant import quantize_per_token as triton_quantize

    x = (torch.randn(*shape) * torch.logspace(-2, 2, shape[0])[:, None]).bfloat16().cuda()
    q, scale = triton_quantize(x)
    want_q, want_scale = quantize_per_token(x)
    torch.testing.assert_close(scale, want_scale, rtol=1e-6, atol=0)
    assert float((q.float() - want_q.float()).abs().max() / want_q.float().abs().max()) <= 1 / 8  # one step at most


def _emulated(x, q, scale, bias, *, one_row, kernels):
    return fp8_reference(x, q, scale, bias).to(x.dtype)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_hopper)])
def test_lora_on_an_fp8_projection(device, monkeypatch):
    """The LoRA term is added in bfloat16 from the unquantized input: output = FP8 base + the same delta a bf16
    layer adds, row by row, with rows of different adapters and rows of none. On the CPU the base is emulated."""
    if device == "cpu":
        monkeypatch.setattr(linear_module, "fp8_linear", _emulated)
    x, q, scale, _ = operands(4, 64, 128, False, device)
    layer = Linear(128, 64)
    layer.weight = torch.nn.Parameter(q, requires_grad=False)
    layer.weight_scale = scale
    gen = torch.Generator().manual_seed(5)
    layer.lora_a = (torch.randn(3, 8, 128, generator=gen) * 0.1).bfloat16().to(device)
    layer.lora_b = (torch.randn(3, 64, 8, generator=gen) * 0.1).bfloat16().to(device)
    layer.lora_a[0].zero_()
    layer.lora_b[0].zero_()
    batch = LoraBatch.build([1, 0, 2, 1], {1: 8, 2: 8}, torch.device(device))
    assert batch is not None
    base = layer(x)
    with_lora = layer(x, batch)
    delta = lora_delta(x, layer.lora_a, layer.lora_b, batch)
    assert float(delta[0].abs().max()) > 0.01 and float(delta[1].abs().max()) == 0.0
    torch.testing.assert_close(with_lora, base + delta, atol=0, rtol=0)
    if device == "cuda":  # the graph path: one row through the FP8 GEMV, still with its LoRA term
        layer.use_kernels = True
        with one_row_gemv():
            one = layer(x[:1], LoraBatch.build([1], {1: 8}, torch.device(device)))
        assert rel(one, fp8_reference(x[:1], q, scale, quantize_x=False) + delta[:1].float()) <= 0.01
