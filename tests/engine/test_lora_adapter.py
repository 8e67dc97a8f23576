"""PEFT adapter parsing: scaling (alpha / r, rsLoRA alpha / sqrt(r)), target-module spellings, and every way an
adapter can be malformed or mismatched -> errors.InvalidArgument naming the reason (the registry stays usable)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from trt_gateway import errors
from trt_gateway.engine.lora.adapter import TARGET_MODULES, load_weights, read_config
from trt_gateway.engine.lora.registry import LoraRegistry

HIDDEN, INTER, LAYERS = 16, 24, 2


def module_shapes(hidden: int = HIDDEN, inter: int = INTER, layers: int = LAYERS) -> dict[str, tuple[int, int]]:
    """(in, out) of every target projection of a Llama with multi-head attention."""
    shapes = {}
    for i in range(layers):
        for m in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[f"model.layers.{i}.self_attn.{m}"] = (hidden, hidden)
        shapes[f"model.layers.{i}.mlp.gate_proj"] = (hidden, inter)
        shapes[f"model.layers.{i}.mlp.up_proj"] = (hidden, inter)
        shapes[f"model.layers.{i}.mlp.down_proj"] = (inter, hidden)
    return shapes


def write_adapter(path: Path, r: int = 4, alpha: float = 8, targets=("q_proj", "v_proj"), seed: int = 0,
                  config: dict | None = None, tensors: dict | None = None, shapes: dict | None = None) -> Path:
    """A PEFT-format adapter written by hand (the same files save_pretrained writes)."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": list(targets), "bias": "none"}
    (path / "adapter_config.json").write_text(json.dumps({**cfg, **(config or {})}))
    if tensors is None:
        g = torch.Generator().manual_seed(seed)
        tensors = {}
        for name, (in_f, out_f) in (shapes or module_shapes()).items():
            if name.rsplit(".", 1)[-1] in targets:
                tensors[f"base_model.model.{name}.lora_A.weight"] = torch.randn(r, in_f, generator=g)
                tensors[f"base_model.model.{name}.lora_B.weight"] = torch.randn(out_f, r, generator=g)
    save_file(tensors, str(path / "adapter_model.safetensors"))
    return path


def registry(**kw) -> LoraRegistry:
    return LoraRegistry(max_loras=kw.pop("max_loras", 2), max_cpu_loras=kw.pop("max_cpu_loras", 4),
                        max_rank=kw.pop("max_rank", 8), modules=module_shapes(), write_slot=lambda s, w: None)


@pytest.mark.parametrize("rslora", [False, True])
def test_scaling_is_folded_into_b(tmp_path, rslora):
    path = write_adapter(tmp_path / "a", r=4, alpha=8, config={"use_rslora": rslora})
    config = read_config(path, max_rank=8)
    assert config.scaling == pytest.approx(8 / math.sqrt(4) if rslora else 8 / 4)
    weights = load_weights(path, config, module_shapes())
    from safetensors.torch import load_file

    raw = load_file(str(path / "adapter_model.safetensors"))
    name = "model.layers.1.self_attn.v_proj"
    assert torch.equal(weights.a[name], raw[f"base_model.model.{name}.lora_A.weight"])
    assert torch.allclose(weights.b[name], raw[f"base_model.model.{name}.lora_B.weight"] * config.scaling)
    assert set(weights.a) == {f"model.layers.{i}.self_attn.{m}" for i in range(2) for m in ("q_proj", "v_proj")}


@pytest.mark.parametrize(
    ("targets", "want"),
    [
        (["q_proj", "model.layers.0.mlp.down_proj"], ("q_proj", "down_proj")),
        ("all-linear", TARGET_MODULES),
        (r".*\.(k_proj|up_proj)", ("k_proj", "up_proj")),
    ],
)
def test_target_module_spellings(tmp_path, targets, want):
    path = write_adapter(tmp_path / "a", config={"target_modules": targets})
    assert read_config(path, 8).target_modules == want


def _bad_cases(tmp: Path) -> dict[str, tuple[Path, str]]:
    good = module_shapes()
    cases: dict[str, tuple[Path, str]] = {}

    def case(name: str, reason: str, **kw) -> Path:
        path = write_adapter(tmp / name, **kw)
        cases[name] = (path, reason)
        return path

    (tmp / "empty").mkdir()
    cases["no-files"] = (tmp / "empty", "adapter_config.json is missing")
    (case("no-weights", "adapter_model.safetensors is missing") / "adapter_model.safetensors").unlink()
    (case("bad-json", "not valid JSON") / "adapter_config.json").write_text("{r: 4,")
    case("not-lora", "peft_type is not 'LORA'", config={"peft_type": "IA3"})
    case("rank-over-limit", "rank 16 exceeds the server's max_lora_rank 8", r=16)
    case("zero-rank", "r must be a positive integer", config={"r": 0})
    case("unknown-module", "names 1 unknown module(s)", config={"target_modules": ["embed_tokens"]})
    case("dora", "DoRA is not supported", config={"use_dora": True})
    case("bias", "bias is not 'none'", config={"bias": "all"})
    wrong = {f"base_model.model.{n}.lora_{ab}.weight": torch.zeros((4, HIDDEN * 2) if ab == "A" else (HIDDEN, 4))
             for n in good if n.endswith("q_proj") for ab in "AB"}
    case("wrong-shape", "has shape [4, 32], expected [4, 16]", targets=("q_proj",), tensors=wrong)
    rank_mismatch = {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(2, HIDDEN),
                     "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(HIDDEN, 2)}
    case("rank-mismatch", "expected [4, 16] (rank 4)", targets=("q_proj",), tensors=rank_mismatch)
    only_a = {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(4, HIDDEN)}
    case("missing-b", "has no matching lora_B", targets=("q_proj",), tensors=only_a)
    outside = {f"base_model.model.model.layers.0.mlp.up_proj.lora_{ab}.weight": torch.zeros(
        (4, HIDDEN) if ab == "A" else (INTER, 4)) for ab in "AB"}
    case("outside-targets", "outside target_modules", targets=("q_proj",), tensors=outside)
    layer_9 = {f"base_model.model.model.layers.9.self_attn.q_proj.lora_{ab}.weight": torch.zeros(
        (4, HIDDEN) if ab == "A" else (HIDDEN, 4)) for ab in "AB"}
    case("no-such-layer", "does not name a LoRA A/B of a supported module", targets=("q_proj",), tensors=layer_9)
    case("no-tensors", "holds no LoRA tensors", tensors={})
    (case("corrupt", "cannot be read") / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00garbage")
    bin_only = case("bin-only", "adapter_model.bin is not supported")
    (bin_only / "adapter_model.safetensors").rename(bin_only / "adapter_model.bin")
    return cases


def test_every_bad_adapter_is_invalid_argument_and_the_registry_keeps_working(tmp_path):
    reg = registry()
    for name, (path, reason) in _bad_cases(tmp_path).items():
        with pytest.raises(errors.InvalidArgument) as info:
            reg.register(name, str(path))
        assert reason in info.value.message, f"{name}: {info.value.message}"
        assert info.value.field == "path"
        assert reg.list() == []  # a refused adapter leaves nothing behind
    reg.register("good", str(write_adapter(tmp_path / "good")))
    assert [a.name for a in reg.list()] == ["good"]


def test_same_name_other_path_is_already_exists_and_unknown_is_not_found(tmp_path):
    reg = registry()
    first = reg.register("x", str(write_adapter(tmp_path / "x1")))
    assert reg.register("x", str(tmp_path / "x1")) == first  # idempotent
    with pytest.raises(errors.AlreadyExists):
        reg.register("x", str(write_adapter(tmp_path / "x2", seed=1)))
    with pytest.raises(errors.NotFound):
        reg.acquire("nope")
    with pytest.raises(errors.NotFound):
        reg.unregister("nope")
