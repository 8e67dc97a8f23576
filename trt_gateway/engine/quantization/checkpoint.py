"""Checkpoints already in FP8: the `quantization_config` of config.json and the tensors it implies.

Two spellings of the same layout are read, the ones vLLM, llm-compressor and TensorRT-LLM's exporters write:
- `{"quant_method": "fp8", "activation_scheme": "dynamic" | "static"}` (vLLM's and HF's FP8 format);
- `{"quant_method": "compressed-tensors", "format": "float-quantized" | "naive-quantized", "config_groups":
  {...: {"weights": {"num_bits": 8, "type": "float", "strategy": "tensor" | "channel"}, "input_activations":
  {...} | null}}, "ignore": ["lm_head", ...]}` (llm-compressor's FP8 schemes).
Each quantized projection `X` stores `X.weight` as float8_e4m3fn [N, K] and `X.weight_scale` as float32, one value
(per tensor: shape [] or [1]) or one per output channel ([N, 1] or [N]); `X.input_scale` (a calibrated static
activation scale) may be there too. The engine reads a per-tensor scale as N equal channel scales (the same
numbers) and quantizes activations per token at run time, which is at least as accurate as a static scale, so
`input_scale` is read past and not used. Block-wise scales (`weight_block_size`, `weight_scale_inv`), integer
formats and FP8 activations-only schemes are refused, naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from trt_gateway.engine.engine_config import EngineConfigError
from trt_gateway.engine.quantization.fp8 import FP8, dequantize, fp8_shape_ok

FIELD = "config.json:quantization_config"
SCALE_SUFFIX = ".weight_scale"
IGNORED_SUFFIXES = (".input_scale",)  # read past: activations are quantized per token at run time
FP8_METHODS = ("fp8", "compressed-tensors")


@dataclass(frozen=True, slots=True)
class Fp8Checkpoint:
    """An FP8 checkpoint's quantization_config, checked: which method wrote it and its weight scale granularity."""

    method: str  # "fp8" or "compressed-tensors"
    weight_strategy: str  # "tensor" or "channel" ("fp8" checkpoints declare none: read from each scale's shape)
    static_input_scales: bool  # the checkpoint carries input_scale tensors (not used; see the module docstring)


def parse_quantization_config(qc: Mapping[str, Any]) -> Fp8Checkpoint:
    """Check a config.json `quantization_config`; raise EngineConfigError naming the key for anything but FP8."""
    method = qc.get("quant_method")
    if method not in FP8_METHODS:
        raise EngineConfigError(
            f"quantized checkpoints other than FP8 ({', '.join(FP8_METHODS)}) are not supported, "
            f"got quant_method {method!r}",
            field=FIELD,
        )
    if method == "fp8":
        if qc.get("weight_block_size"):
            raise _refuse("weight_block_size", qc["weight_block_size"], "block-wise FP8 scales are not supported")
        scheme = qc.get("activation_scheme", "dynamic")
        if scheme not in ("dynamic", "static"):
            raise _refuse("activation_scheme", scheme, "must be 'dynamic' or 'static'")
        return Fp8Checkpoint("fp8", "channel", scheme == "static")
    return _compressed_tensors(qc)


def _compressed_tensors(qc: Mapping[str, Any]) -> Fp8Checkpoint:
    groups = qc.get("config_groups") or {}
    if not isinstance(groups, Mapping) or not groups:
        raise _refuse("config_groups", groups, "an FP8 compressed-tensors checkpoint needs one weight scheme")
    strategies: set[str] = set()
    static = False
    for name, group in groups.items():
        weights = group.get("weights") or {}
        if weights.get("num_bits") != 8 or weights.get("type") != "float":
            raise _refuse(
                f"config_groups.{name}.weights",
                {k: weights.get(k) for k in ("num_bits", "type")},
                "only 8-bit float weights (FP8 E4M3) are supported",
            )
        strategy = weights.get("strategy", "tensor")
        if strategy not in ("tensor", "channel"):
            raise _refuse(f"config_groups.{name}.weights.strategy", strategy, "must be 'tensor' or 'channel'")
        strategies.add(strategy)
        acts = group.get("input_activations") or {}
        static = static or (bool(acts) and not acts.get("dynamic", False))
    return Fp8Checkpoint("compressed-tensors", "channel" if "channel" in strategies else "tensor", static)


def _refuse(key: str, value: Any, why: str) -> EngineConfigError:
    return EngineConfigError(f"{key}={value!r}: {why}", field=FIELD)


def is_quantization_tensor(name: str) -> bool:
    """Names an FP8 checkpoint has beside the model's own parameters (checked here, not against the model)."""
    return name.endswith(SCALE_SUFFIX) or name.endswith(IGNORED_SUFFIXES)


def channel_scale(name: str, scale: torch.Tensor, out_features: int) -> torch.Tensor:
    """A stored weight_scale (per tensor or per channel) -> float32 [out_features] on the scale's device."""
    if scale.numel() == 1:
        return scale.float().reshape(1).expand(out_features).contiguous()
    if scale.numel() == out_features and scale.dim() in (1, 2) and scale.shape[0] == out_features:
        return scale.float().reshape(out_features).contiguous()
    raise EngineConfigError(
        f"{name}: shape {tuple(scale.shape)} is neither one scale nor one per output channel ({out_features}); "
        "block-wise scales are not supported",
        field="model",
    )


def split_fp8_state(
    raw: dict[str, torch.Tensor], dtype: torch.dtype, serve_fp8: bool
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """An FP8 checkpoint's tensors -> (the model's state dict, module name -> channel scale [N] of FP8 weights).

    serve_fp8: keep quantized weights in FP8 (Hopper); otherwise, and for a projection whose shape `_scaled_mm`
    cannot take, dequantize it to `dtype` (weights equal to q * scale, rounded once to dtype)."""
    scales = {n[: -len(SCALE_SUFFIX)]: t for n, t in raw.items() if n.endswith(SCALE_SUFFIX)}
    state: dict[str, torch.Tensor] = {}
    fp8_scales: dict[str, torch.Tensor] = {}
    for name, tensor in raw.items():
        if is_quantization_tensor(name):
            continue
        module = name.removesuffix(".weight")
        if tensor.dtype != FP8:
            if module in scales and name.endswith(".weight"):
                raise EngineConfigError(f"{name} has a weight_scale but is stored as {tensor.dtype}", field="model")
            state[name] = tensor.to(dtype)
            continue
        if module not in scales or not name.endswith(".weight"):
            raise EngineConfigError(f"{name} is float8_e4m3fn but has no {module}.weight_scale", field="model")
        scale = channel_scale(module + SCALE_SUFFIX, scales.pop(module), tensor.shape[0])
        if serve_fp8 and tensor.dim() == 2 and fp8_shape_ok(*tensor.shape):
            state[name], fp8_scales[module] = tensor, scale
        else:
            state[name] = dequantize(tensor, scale).to(dtype)
    if scales:
        orphans = sorted(f"{m}{SCALE_SUFFIX}" for m in scales)
        raise EngineConfigError(f"weight scales without an FP8 weight: {', '.join(orphans[:5])}", field="model")
    return state, fp8_scales
