"""Read and validate one PEFT LoRA adapter (`adapter_config.json` + `adapter_model.safetensors`).

An adapter is untrusted input: every way it can be wrong for the served model (missing files, bad JSON, a non-LoRA
PEFT type, an unknown target module, a rank over the limit, a tensor whose shape does not fit the module it names)
raises `errors.InvalidArgument` with the reason, before any tensor is read. Shapes are checked from the safetensors
header alone.

PEFT computes `y = W x + scaling * B (A x)` with A [r, in], B [out, r] and scaling = alpha / r (rsLoRA:
alpha / sqrt(r)). The scaling is folded into B here, once, so the batched kernels only ever do `B' (A x)`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from trt_gateway import errors

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
# PEFT module names -> where they sit in a Llama decoder layer. The engine's module names mirror HF's.
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# "base_model.model.<module>.lora_A.weight"; older PEFT versions keep the adapter name: "lora_A.default.weight".
_KEY_RE = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")
_UNSUPPORTED = {  # config keys whose non-default values change the math in ways this engine does not implement
    "use_dora": "DoRA",
    "modules_to_save": "modules_to_save (full fine-tuned modules)",
    "rank_pattern": "rank_pattern",
    "alpha_pattern": "alpha_pattern",
    "layer_replication": "layer_replication",
    "lora_bias": "lora_bias (a bias on B)",
    "trainable_token_indices": "trainable_token_indices",
}


@dataclass(frozen=True, slots=True)
class LoraWeights:
    """One adapter in host memory, float32. Per module name: A [r, in] and B' = scaling * B [out, r]."""

    rank: int
    a: Mapping[str, torch.Tensor]
    b: Mapping[str, torch.Tensor]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.a.values(), *self.b.values()))


@dataclass(frozen=True, slots=True)
class AdapterConfig:
    rank: int
    alpha: float
    scaling: float
    use_rslora: bool
    target_modules: tuple[str, ...]  # short PEFT names, e.g. ("q_proj", "v_proj")


def read_config(path: Path, max_rank: int) -> AdapterConfig:
    file = path / CONFIG_FILE
    if not file.is_file():
        raise _invalid(path, f"{CONFIG_FILE} is missing")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _invalid(path, f"{CONFIG_FILE} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise _invalid(path, f"{CONFIG_FILE} must hold a JSON object")
    if raw.get("peft_type", "LORA") != "LORA":
        raise _invalid(path, f"peft_type {raw.get('peft_type')!r} is not supported (only 'LORA')")
    for key, what in _UNSUPPORTED.items():
        if raw.get(key):
            raise _invalid(path, f"{what} is not supported")
    if raw.get("bias", "none") != "none":
        raise _invalid(path, f"bias={raw.get('bias')!r} is not supported (only 'none')")
    rank = raw.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise _invalid(path, f"r must be a positive integer, got {rank!r}")
    if rank > max_rank:
        raise _invalid(path, f"rank {rank} exceeds the server's max_lora_rank {max_rank}")
    alpha = raw.get("lora_alpha", 8)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not math.isfinite(alpha) or alpha <= 0:
        raise _invalid(path, f"lora_alpha must be a positive number, got {alpha!r}")
    rslora = bool(raw.get("use_rslora", False))
    scaling = alpha / math.sqrt(rank) if rslora else alpha / rank
    return AdapterConfig(rank, float(alpha), scaling, rslora, _targets(path, raw.get("target_modules")))


def _targets(path: Path, value: Any) -> tuple[str, ...]:
    """PEFT allows a list of module-name suffixes, a regex over full module names, or "all-linear"."""
    if value == "all-linear":
        return TARGET_MODULES
    if isinstance(value, str):  # a regex, matched by PEFT with re.fullmatch against full module names
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise _invalid(path, f"target_modules regex {value!r} does not compile: {exc}") from exc
        found = tuple(m for m in TARGET_MODULES if pattern.fullmatch(f"model.layers.0.self_attn.{m}")
                      or pattern.fullmatch(f"model.layers.0.mlp.{m}"))
        if not found:
            raise _invalid(path, f"target_modules regex {value!r} matches none of {', '.join(TARGET_MODULES)}")
        return found
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _invalid(path, f"target_modules must be a non-empty list of names, got {value!r}")
    unknown = sorted({v.rsplit(".", 1)[-1] for v in value} - set(TARGET_MODULES))
    if unknown:
        raise _invalid(path, f"unknown target modules {unknown}; supported: {', '.join(TARGET_MODULES)}")
    return tuple(m for m in TARGET_MODULES if any(v.rsplit(".", 1)[-1] == m for v in value))


def load_weights(path: Path, config: AdapterConfig, modules: Mapping[str, tuple[int, int]]) -> LoraWeights:
    """Check every tensor against `modules` (engine module name -> (in_features, out_features)), then read them.

    1. parse each key to (module, A|B): an unknown module or a module outside target_modules is refused;
    2. check shapes from the header: A [r, in], B [out, r], r = the config's rank;
    3. require A and B in pairs, read them as float32 and fold the scaling into B.
    """
    file = path / WEIGHTS_FILE
    if not file.is_file():
        hint = " (adapter_model.bin is not supported: re-save with safe_serialization)" if (
            path / "adapter_model.bin").is_file() else ""
        raise _invalid(path, f"{WEIGHTS_FILE} is missing{hint}")
    r = config.rank
    targets = set(config.target_modules)
    a: dict[str, torch.Tensor] = {}
    b: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            shapes: dict[tuple[str, str], tuple[str, tuple[int, ...]]] = {}
            for key in f.keys():
                match = _KEY_RE.match(key)
                if match is None or match["module"] not in modules:
                    raise _invalid(path, f"tensor {key!r} does not name a LoRA A/B of a supported module")
                module = match["module"]
                if module.rsplit(".", 1)[-1] not in targets:
                    raise _invalid(path, f"tensor {key!r} is for a module outside target_modules")
                shapes[(module, match["ab"])] = (key, tuple(f.get_slice(key).get_shape()))
            for (module, ab), (key, shape) in sorted(shapes.items()):
                in_f, out_f = modules[module]
                want = (r, in_f) if ab == "A" else (out_f, r)
                if shape != want:
                    raise _invalid(path, f"tensor {key!r} has shape {list(shape)}, expected {list(want)} (rank {r})")
                if (module, "B" if ab == "A" else "A") not in shapes:
                    raise _invalid(path, f"tensor {key!r} has no matching lora_{'B' if ab == 'A' else 'A'}")
            if not shapes:
                raise _invalid(path, f"{WEIGHTS_FILE} holds no LoRA tensors")
            for (module, ab), (key, _) in shapes.items():
                tensor = f.get_tensor(key).to(torch.float32)
                if ab == "A":
                    a[module] = tensor.contiguous()
                else:
                    b[module] = (tensor * config.scaling).contiguous()
    except errors.GatewayError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt file raises whatever safetensors raises
        raise _invalid(path, f"{WEIGHTS_FILE} cannot be read: {exc}") from exc
    return LoraWeights(rank=r, a=a, b=b)


def _invalid(path: Path, reason: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(f"adapter at {path}: {reason}", field="path")
