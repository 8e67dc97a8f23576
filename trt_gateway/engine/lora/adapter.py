"""Read and validate one PEFT LoRA adapter (`adapter_config.json` + `adapter_model.safetensors`).

An adapter is untrusted input: every way it can be wrong for the served model (missing or symlinked files, bad JSON,
a non-LoRA PEFT type, an unknown target module, a rank over the limit, a tensor whose dtype is not floating point or
whose shape does not fit the module it names, NaN or infinite values) raises `errors.InvalidArgument` with the reason
and the tensor's name. Dtypes and shapes are checked from the safetensors header before any tensor is built. Errors
never quote the config file's values (only their types): the file may not be what it claims to be.

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

import safetensors.torch
import torch

from trt_gateway import adapter_files, errors

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
MAX_CONFIG_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 8 << 30
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")  # safetensors' names; integer, bool and float8 weights are refused
_JSON_TYPES = {str: "string", list: "array", dict: "object", bool: "boolean", type(None): "null"}
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
    """Errors name the key and the type of a bad value, never the value: the file is untrusted and the error goes
    back to the client."""
    try:
        text = adapter_files.read_file(str(path), CONFIG_FILE, MAX_CONFIG_BYTES)
    except adapter_files.Unreadable as exc:
        raise _invalid(path, exc.reason) from None
    try:
        raw = json.loads(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise _invalid(path, f"{CONFIG_FILE} is not valid JSON (or not UTF-8)") from None
    if not isinstance(raw, dict):
        raise _invalid(path, f"{CONFIG_FILE} must hold a JSON object")
    if raw.get("peft_type", "LORA") != "LORA":
        raise _invalid(path, "peft_type is not 'LORA': only LoRA adapters are supported")
    for key, what in _UNSUPPORTED.items():
        if raw.get(key):
            raise _invalid(path, f"{what} is not supported")
    if raw.get("bias", "none") != "none":
        raise _invalid(path, "bias is not 'none': trained biases are not supported")
    rank = raw.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise _invalid(path, f"r must be a positive integer, got {_kind(rank)}")
    if rank > max_rank:
        raise _invalid(path, f"rank {rank} exceeds the server's max_lora_rank {max_rank}")
    alpha = raw.get("lora_alpha", 8)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not math.isfinite(alpha) or alpha <= 0:
        raise _invalid(path, f"lora_alpha must be a positive number, got {_kind(alpha)}")
    rslora = bool(raw.get("use_rslora", False))
    scaling = alpha / math.sqrt(rank) if rslora else alpha / rank
    return AdapterConfig(rank, float(alpha), scaling, rslora, _targets(path, raw.get("target_modules")))


def _kind(value: Any) -> str:
    """A config value as an error may show it: numbers (their size is the point), else only the JSON type."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    return f"a JSON {_JSON_TYPES.get(type(value), 'value')}"


def _targets(path: Path, value: Any) -> tuple[str, ...]:
    """PEFT allows a list of module-name suffixes, a regex over full module names, or "all-linear"."""
    if value == "all-linear":
        return TARGET_MODULES
    if isinstance(value, str):  # a regex, matched by PEFT with re.fullmatch against full module names
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise _invalid(path, f"target_modules regex does not compile: {exc.msg}") from None
        found = tuple(m for m in TARGET_MODULES if pattern.fullmatch(f"model.layers.0.self_attn.{m}")
                      or pattern.fullmatch(f"model.layers.0.mlp.{m}"))
        if not found:
            raise _invalid(path, f"target_modules regex matches none of {', '.join(TARGET_MODULES)}")
        return found
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _invalid(path, f"target_modules must be a non-empty list of names, got {_kind(value)}")
    unknown = sorted({v.rsplit(".", 1)[-1] for v in value} - set(TARGET_MODULES))
    if unknown:
        raise _invalid(path, f"target_modules names {len(unknown)} unknown module(s); supported: "
                             f"{', '.join(TARGET_MODULES)}")
    return tuple(m for m in TARGET_MODULES if any(v.rsplit(".", 1)[-1] == m for v in value))


def load_weights(path: Path, config: AdapterConfig, modules: Mapping[str, tuple[int, int]]) -> LoraWeights:
    """Check every tensor against `modules` (engine module name -> (in_features, out_features)), then read them.

    1. read the file through `adapter_files` (no symlink followed, on every read, first or again after eviction);
    2. parse each key to (module, A|B): an unknown module or a module outside target_modules is refused;
    3. check dtypes and shapes from the header: floating point, A [r, in], B [out, r], r = the config's rank;
    4. require A and B in pairs, read them, refuse NaN / inf, and fold the scaling into B (float32).
    """
    data = _read_weights(path)
    header = _header(path, data)
    r = config.rank
    targets = set(config.target_modules)
    shapes: dict[tuple[str, str], tuple[str, tuple[int, ...]]] = {}
    for key, entry in header.items():
        match = _KEY_RE.match(key)
        if match is None or match["module"] not in modules:
            raise _invalid(path, f"tensor {key[:200]!r} does not name a LoRA A/B of a supported module")
        module = match["module"]
        if module.rsplit(".", 1)[-1] not in targets:
            raise _invalid(path, f"tensor {key[:200]!r} is for a module outside target_modules")
        _check_dtype(path, key, entry)
        shapes[(module, match["ab"])] = (key, tuple(entry.get("shape") or ()))
    for (module, ab), (key, shape) in sorted(shapes.items()):
        in_f, out_f = modules[module]
        want = (r, in_f) if ab == "A" else (out_f, r)
        if shape != want:
            raise _invalid(path, f"tensor {key[:200]!r} has shape {list(shape)}, expected {list(want)} (rank {r})")
        if (module, "B" if ab == "A" else "A") not in shapes:
            raise _invalid(path, f"tensor {key[:200]!r} has no matching lora_{'B' if ab == 'A' else 'A'}")
    if not shapes:
        raise _invalid(path, f"{WEIGHTS_FILE} holds no LoRA tensors")
    tensors = _tensors(path, data)
    a: dict[str, torch.Tensor] = {}
    b: dict[str, torch.Tensor] = {}
    for (module, ab), (key, _) in shapes.items():
        tensor = _finite(path, key, tensors[key])
        if ab == "A":
            a[module] = tensor.contiguous()
        else:
            b[module] = (tensor * config.scaling).contiguous()
    return LoraWeights(rank=r, a=a, b=b)


def check_weights_file(path: Path) -> None:
    """The dtype and NaN / inf checks alone, for executors whose engine reads the adapter itself (trtllm, vllm):
    they know nothing of the module shapes, but a NaN adapter would make their outputs empty all the same."""
    data = _read_weights(path)
    for key, entry in _header(path, data).items():
        _check_dtype(path, key, entry)
    for key, tensor in _tensors(path, data).items():
        _finite(path, key, tensor)


def _read_weights(path: Path) -> bytes:
    try:
        return adapter_files.read_file(str(path), WEIGHTS_FILE, MAX_WEIGHTS_BYTES)
    except adapter_files.Unreadable as exc:
        hint = " (adapter_model.bin is not supported: re-save with safe_serialization)" if exc.missing and (
            path / "adapter_model.bin").is_file() else ""
        raise _invalid(path, exc.reason + hint) from None


def _check_dtype(path: Path, key: str, entry: dict[str, Any]) -> None:
    if entry.get("dtype") not in FLOAT_DTYPES:
        raise _invalid(path, f"tensor {key[:200]!r} has dtype {str(entry.get('dtype'))[:16]}; LoRA weights must be "
                             f"floating point ({', '.join(FLOAT_DTYPES)})")


def _tensors(path: Path, data: bytes) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load(data)
    except Exception:  # noqa: BLE001 - a corrupt file raises whatever safetensors raises
        raise _invalid(path, f"{WEIGHTS_FILE} cannot be read: not a valid safetensors file") from None


def _finite(path: Path, key: str, tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` in float32, refused if any value is NaN or infinite (a NaN in B makes every logit NaN: the output
    would be empty)."""
    tensor = tensor.to(torch.float32)
    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise _invalid(path, f"tensor {key[:200]!r} holds {bad} NaN or infinite value(s) (in float32)")
    return tensor


def _header(path: Path, data: bytes) -> dict[str, dict[str, Any]]:
    """The tensor entries of a safetensors header (8-byte little-endian length, then JSON), before any tensor is
    built: dtypes and shapes are checked on it."""
    size = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    try:
        if not 2 <= size <= len(data) - 8:
            raise ValueError
        header = json.loads(data[8 : 8 + size].decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError
    except (ValueError, UnicodeDecodeError):
        raise _invalid(path, f"{WEIGHTS_FILE} cannot be read: not a valid safetensors file") from None
    header.pop("__metadata__", None)
    if not all(isinstance(v, dict) for v in header.values()):
        raise _invalid(path, f"{WEIGHTS_FILE} cannot be read: not a valid safetensors file")
    return header


def _invalid(path: Path, reason: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(f"adapter at {path}: {reason}", field="path")
