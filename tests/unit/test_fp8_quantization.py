"""FP8 maths and checkpoint formats on the CPU (torch's float8 casts work there; `torch._scaled_mm` is what only the
GPU tests exercise: tests/golden/test_fp8_golden.py).

Tolerances (relative Frobenius errors against float64, normal weights and inputs; measured 2.6 %, 2.7 %, 3.7 %):
a quantized weight matrix <= 3 %, a matmul with the row in its own dtype <= 3.5 %, with the row quantized per token
too <= 4.5 %. Per-channel scales must hold that bound on every row, even when rows differ by 10^6 in magnitude.
"""

from __future__ import annotations

import pytest
import torch

from trt_gateway.engine.engine_config import EngineConfigError
from trt_gateway.engine.layers.linear import FusedLinear, Linear
from trt_gateway.engine.quantization.apply import quantize_linears
from trt_gateway.engine.quantization.checkpoint import (
    channel_scale,
    parse_quantization_config,
    split_fp8_state,
)
from trt_gateway.engine.quantization.fp8 import (
    FP8,
    FP8_MAX,
    dequantize,
    fp8_reference,
    fp8_unsupported_reason,
    quantize_per_channel,
    quantize_per_token,
    require_fp8_device,
)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_per_channel_uses_the_whole_range_of_every_row():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 256, generator=g) * torch.logspace(-3, 3, 64)[:, None]  # rows 10^6 apart
    q, scale = quantize_per_channel(w.bfloat16())
    assert q.dtype == FP8 and scale.dtype == torch.float32 and scale.shape == (64,)
    assert torch.equal(q.float().abs().amax(dim=1), torch.full((64,), FP8_MAX))  # each row's max lands on 448
    back = dequantize(q, scale)
    per_row = (back - w.bfloat16().float()).norm(dim=1) / w.bfloat16().float().norm(dim=1)
    assert float(per_row.max()) <= 0.03, per_row.max()  # a per-tensor scale would flush the small rows to zero


def test_zero_rows_stay_zero_and_finite():
    w = torch.zeros(16, 32)
    w[3] = torch.linspace(-1, 1, 32)
    q, scale = quantize_per_channel(w)
    back = dequantize(q, scale)
    assert torch.isfinite(scale).all() and torch.isfinite(back).all()
    assert torch.equal(back[0], torch.zeros(32)) and rel(back[3], w[3]) < 0.03
    xq, xs = quantize_per_token(torch.zeros(2, 32))
    assert torch.equal(xq.float(), torch.zeros(2, 32)) and torch.isfinite(xs).all() and xs.shape == (2, 1)


def test_matmul_errors_within_the_stated_bounds():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(256, 1024, generator=g) * 0.02
    x = torch.randn(32, 1024, generator=g)
    q, scale = quantize_per_channel(w)
    exact = x.double() @ w.double().T
    assert rel(dequantize(q, scale), w) <= 0.03
    assert rel(fp8_reference(x, q, scale, quantize_x=False), exact) <= 0.035
    assert rel(fp8_reference(x, q, scale), exact) <= 0.045
    bias = torch.randn(256, generator=g)
    assert rel(fp8_reference(x, q, scale, bias), exact + bias.double()) <= 0.045


def test_per_token_scales_each_row_on_its_own():
    x = torch.randn(4, 100) * torch.tensor([1e-4, 1.0, 10.0, 1e4])[:, None]
    q, scale = quantize_per_token(x)
    assert torch.equal(q.float().abs().amax(dim=1), torch.full((4,), FP8_MAX))
    per_row = (dequantize(q, scale) - x).norm(dim=1) / x.norm(dim=1)
    assert float(per_row.max()) <= 0.03


def test_fp8_is_refused_off_hopper():
    assert "compute capability 9.0" in (fp8_unsupported_reason(torch.device("cpu")) or "")
    with pytest.raises(EngineConfigError) as err:
        require_fp8_device(torch.device("cpu"))
    assert err.value.field == "quantization" and "Hopper" in err.value.message


# -- checkpoint formats -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("qc", "strategy", "static"),
    [
        ({"quant_method": "fp8", "activation_scheme": "dynamic"}, "channel", False),
        ({"quant_method": "fp8", "activation_scheme": "static"}, "channel", True),
        (
            {
                "quant_method": "compressed-tensors",
                "format": "float-quantized",
                "config_groups": {
                    "group_0": {
                        "targets": ["Linear"],
                        "weights": {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": True},
                        "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": True},
                    }
                },
                "ignore": ["lm_head"],
            },
            "channel",
            False,
        ),
        (
            {
                "quant_method": "compressed-tensors",
                "config_groups": {
                    "g": {
                        "weights": {"num_bits": 8, "type": "float", "strategy": "tensor"},
                        "input_activations": {"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False},
                    }
                },
            },
            "tensor",
            True,
        ),
    ],
)
def test_fp8_quantization_configs_parse(qc, strategy, static):
    parsed = parse_quantization_config(qc)
    assert (parsed.method, parsed.weight_strategy, parsed.static_input_scales) == (qc["quant_method"], strategy, static)


@pytest.mark.parametrize(
    ("qc", "words"),
    [
        ({"quant_method": "awq", "bits": 4}, "quant_method 'awq'"),
        ({"quant_method": "fp8", "weight_block_size": [128, 128]}, "weight_block_size"),
        ({"quant_method": "compressed-tensors", "config_groups": {}}, "config_groups"),
        (
            {"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"num_bits": 8, "type": "int"}}}},
            "config_groups.g.weights",
        ),
        (
            {
                "quant_method": "compressed-tensors",
                "config_groups": {"g": {"weights": {"num_bits": 8, "type": "float", "strategy": "block"}}},
            },
            "strategy='block'",
        ),
    ],
)
def test_other_quantizations_are_refused_naming_the_key(qc, words):
    with pytest.raises(EngineConfigError) as err:
        parse_quantization_config(qc)
    assert err.value.field == "config.json:quantization_config" and words in err.value.message


def test_channel_scale_shapes():
    for stored in (torch.tensor(0.5), torch.tensor([0.5])):
        assert torch.equal(channel_scale("s", stored, 3), torch.full((3,), 0.5))
    per_channel = torch.tensor([1.0, 2.0, 3.0])
    for stored in (per_channel, per_channel.view(3, 1)):
        assert torch.equal(channel_scale("s", stored, 3), per_channel)
    with pytest.raises(EngineConfigError, match=r"x.weight_scale: shape \(2, 2\)"):
        channel_scale("x.weight_scale", torch.ones(2, 2), 4)


def test_split_fp8_state_keeps_or_dequantizes():
    q, scale = quantize_per_channel(torch.randn(32, 16))
    raw = {
        "a.weight": q,
        "a.weight_scale": scale.view(32, 1),
        "a.input_scale": torch.tensor(0.1),
        "norm.weight": torch.ones(16, dtype=torch.float64),
    }
    kept, scales = split_fp8_state(raw, torch.bfloat16, serve_fp8=True)
    assert kept["a.weight"] is q and torch.equal(scales["a"], scale) and kept["norm.weight"].dtype == torch.bfloat16
    assert set(kept) == {"a.weight", "norm.weight"}  # scales and input_scale are not model parameters
    plain, none = split_fp8_state(raw, torch.float32, serve_fp8=False)
    assert none == {} and torch.equal(plain["a.weight"], dequantize(q, scale))
    with pytest.raises(EngineConfigError, match="has no a.weight_scale"):
        split_fp8_state({"a.weight": q}, torch.bfloat16, serve_fp8=True)
    with pytest.raises(EngineConfigError, match="without an FP8 weight: b.weight_scale"):
        split_fp8_state({"b.weight_scale": scale}, torch.bfloat16, serve_fp8=True)


def test_fusing_fp8_parts_keeps_each_parts_weights_and_scales():
    parts = []
    for n in (32, 16, 16):
        layer = Linear(64, n)
        layer.weight = torch.nn.Parameter(torch.randn(n, 64), requires_grad=False)
        parts.append(layer)
    container = torch.nn.ModuleDict({f"{name}_proj": p for name, p in zip("qkv", parts, strict=True)})
    before = [dequantize(*quantize_per_channel(p.weight)) for p in parts]
    assert quantize_linears(container) == 3
    fused = FusedLinear(parts)
    assert fused.weight.dtype == FP8 and fused.weight.shape == (64, 64) and fused.weight_scale is not None
    assert torch.equal(dequantize(fused.weight, fused.weight_scale), torch.cat(before))
    for part, want in zip(parts, before, strict=True):
        assert part.weight.untyped_storage().data_ptr() == fused.weight.untyped_storage().data_ptr()  # a view
        assert torch.equal(dequantize(part.weight, part.weight_scale), want)
    mixed = [Linear(8, 16), Linear(8, 16)]
    mixed[0].weight_scale = torch.ones(16)
    with pytest.raises(ValueError, match="all be FP8"):
        FusedLinear(mixed)


def test_the_quantization_flag_reaches_the_engine_config():
    from trt_gateway.cli import build_parser, serve_overrides
    from trt_gateway.config import ConfigError, from_mapping
    from trt_gateway.executors.native import DEMO_MODEL, NativeExecutor

    args = build_parser().parse_args(["serve", "--quantization", "fp8", "--option", "max_num_seqs=4"])
    executor = from_mapping(serve_overrides(args)).executor
    assert dict(executor.options) == {"max_num_seqs": 4, "quantization": "fp8"}
    assert NativeExecutor(str(DEMO_MODEL), options=executor.options).engine_config.quantization == "fp8"
    with pytest.raises(ConfigError, match="quantization"):
        NativeExecutor(str(DEMO_MODEL), options={"quantization": "int4"})
