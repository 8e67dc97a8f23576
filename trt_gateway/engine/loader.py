"""Load an HF-format checkpoint (or a GGUF file: `gguf_checkpoint`) into a `LlamaForCausalLM` without building (or initialising) the weights twice.

1. build the module tree on the `meta` device (no memory, no random init);
2. check every checkpoint tensor's name and shape against it from the safetensors headers alone, so a wrong
   checkpoint fails at start-up naming the tensors at fault, before anything is read;
3. read each tensor straight onto the target device with `safe_open(device=...)`, cast it to the engine dtype, and
   `load_state_dict(assign=True)` so the modules adopt those tensors instead of copying into preallocated ones.

`dummy=True` skips 2-3: every tensor is drawn on the device (normal(0, initializer_range), norms 1, biases 0), so an
8B architecture is ready in seconds without a checkpoint, for benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from trt_gateway.engine import gguf_checkpoint
from trt_gateway.engine.engine_config import EngineConfig, EngineConfigError
from trt_gateway.engine.layers.rotary import RotaryEmbedding
from trt_gateway.engine.model_config import ModelConfig
from trt_gateway.engine.models.llama import LlamaForCausalLM

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Older checkpoints saved RoPE buffers; the engine recomputes them.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
_MAX_LISTED = 5


def resolve_device(config: EngineConfig) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EngineConfigError("CUDA was requested but torch sees no GPU", field="device")
    return device


def resolve_dtype(config: EngineConfig, model_cfg: ModelConfig, device: torch.device) -> torch.dtype:
    if config.dtype != "auto":
        return _DTYPES[config.dtype]  # float32 on CUDA is allowed: slow, but useful against fp32 references
    if device.type == "cpu":
        return torch.float32  # bf16 matmuls are slow or emulated on many CPUs
    return torch.float16 if model_cfg.torch_dtype == "float16" else torch.bfloat16


def load_model(
    path: str | Path,
    cfg: ModelConfig,
    device: torch.device,
    dtype: torch.dtype,
    max_positions: int,
    *,
    dummy: bool = False,
    use_kernels: bool = False,
) -> LlamaForCausalLM:
    """use_kernels: the model runs its Triton kernels (CUDA only; see `kernels_usable`)."""
    model = (
        _dummy_model(cfg, device, dtype, max_positions, use_kernels)
        if dummy
        else _checkpoint_model(path, cfg, device, dtype, max_positions, use_kernels)
    )
    model.fuse_projections()
    return model


def kernels_usable(device: torch.device, cfg: ModelConfig) -> bool:
    """Triton kernels run on CUDA devices when triton is installed and the head size suits the attention kernels
    (a power of two >= 16: 64 and 128 cover Llama, Mistral and Qwen2); elsewhere the torch paths do."""
    head_dim = cfg.head_dim
    if device.type != "cuda" or head_dim < 16 or head_dim & (head_dim - 1):
        return False
    from trt_gateway.engine import kernels

    return kernels.available()


def _checkpoint_model(
    path: str | Path, cfg: ModelConfig, device: torch.device, dtype: torch.dtype, max_positions: int, use_kernels: bool
) -> LlamaForCausalLM:
    gguf_file = gguf_checkpoint.find_gguf(path)
    files = sorted(Path(path).glob("*.safetensors")) if gguf_file is None else []
    if not files and gguf_file is None:
        raise EngineConfigError(
            f"no *.safetensors files in {str(path)!r} (.bin checkpoints are not supported)", field="model"
        )
    rotary = RotaryEmbedding(cfg.rope, cfg.head_dim, max_positions, device)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg, rotary, use_kernels)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if cfg.tie_word_embeddings:
        expected.pop("lm_head.weight")

    if gguf_file is not None:
        heads = (cfg.num_attention_heads, cfg.num_key_value_heads)
        state = gguf_checkpoint.load_state_dict(gguf_file, expected, *heads, dtype, device)
    else:
        state = _read_safetensors(files, expected, cfg.tie_word_embeddings, device, dtype)
    if cfg.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight  # type: ignore[assignment]  # one Parameter
    return model.eval()


def _read_safetensors(
    files: list[Path], expected: dict[str, tuple[int, ...]], tied: bool, device: torch.device, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    located = _check_headers(files, expected, tied)
    state: dict[str, torch.Tensor] = {}
    device_name = str(device) if device.type != "cuda" or device.index is not None else "cuda:0"
    for file, names in located.items():
        with safe_open(str(file), framework="pt", device=device_name) as f:
            for name in names:
                state[name] = f.get_tensor(name).to(dtype)
    return state


@torch.inference_mode()
def _dummy_model(
    cfg: ModelConfig, device: torch.device, dtype: torch.dtype, max_positions: int, use_kernels: bool
) -> LlamaForCausalLM:
    rotary = RotaryEmbedding(cfg.rope, cfg.head_dim, max_positions, device)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg, rotary, use_kernels)
    generator = torch.Generator(device=device).manual_seed(0)
    state: dict[str, torch.Tensor] = {}
    for name, meta in model.state_dict().items():
        if cfg.tie_word_embeddings and name == "lm_head.weight":
            continue
        tensor = torch.empty(meta.shape, dtype=dtype, device=device)
        if name.endswith("norm.weight"):
            tensor.fill_(1.0)
        elif name.endswith(".bias"):
            tensor.zero_()
        else:
            tensor.normal_(0.0, cfg.initializer_range, generator=generator)
        state[name] = tensor
    if cfg.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight  # type: ignore[assignment]  # one Parameter
    return model.eval()


def _check_headers(files: list[Path], expected: dict[str, tuple[int, ...]], tied: bool) -> dict[Path, list[str]]:
    """Map each file to the tensor names to read from it; raise naming missing, unexpected or misshapen tensors."""
    located: dict[Path, list[str]] = {}
    found: set[str] = set()
    unexpected: list[str] = []
    mismatched: list[str] = []
    for file in files:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for name in f.keys():
                if name.endswith(_IGNORED_SUFFIXES) or (tied and name == "lm_head.weight"):
                    continue
                if name not in expected:
                    unexpected.append(name)
                    continue
                shape = tuple(f.get_slice(name).get_shape())
                if shape != expected[name]:
                    mismatched.append(f"{name}: checkpoint {shape}, model expects {expected[name]}")
                    continue
                found.add(name)
                located.setdefault(file, []).append(name)
    missing = sorted(set(expected) - found - {m.split(":")[0] for m in mismatched})
    problems = []
    if missing:
        problems.append(f"missing weights {_listing(missing)}")
    if mismatched:
        problems.append(f"shape mismatch {_listing(mismatched)}")
    if unexpected:
        problems.append(f"unexpected weights {_listing(sorted(unexpected))}")
    if problems:
        raise EngineConfigError("checkpoint does not match its config.json: " + "; ".join(problems), field="model")
    return located


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return f"({len(items)}): {shown}{more}"
