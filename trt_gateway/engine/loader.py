"""Load an HF-format checkpoint (or a GGUF file: `gguf_checkpoint`) into a `LlamaForCausalLM` without building (or initialising) the weights twice.

1. build the module tree on the `meta` device (no memory, no random init);
2. check every checkpoint tensor's name and shape against it from the safetensors headers alone, so a wrong
   checkpoint fails at start-up naming the tensors at fault, before anything is read;
3. read each tensor straight onto the target device with `safe_open(device=...)`, cast it to the engine dtype, and
   `load_state_dict(assign=True)` so the modules adopt those tensors instead of copying into preallocated ones.

`dummy=True` skips 2-3: every tensor is drawn on the device (normal(0, initializer_range), norms 1, biases 0), so an
8B architecture is ready in seconds without a checkpoint, for benchmarks.

FP8 (`quantization/`, docs/engine.md#fp8): an FP8 checkpoint's scale tensors are located beside the model's names,
and its FP8 weights kept as stored or dequantized; `fp8=True` quantizes the other weights once they are loaded.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from trt_gateway.engine import gguf_checkpoint
from trt_gateway.engine.engine_config import EngineConfig, EngineConfigError, refuse_mismatched_weights
from trt_gateway.engine.layers.rotary import RotaryEmbedding
from trt_gateway.engine.model_config import ModelConfig
from trt_gateway.engine.models.llama import LlamaForCausalLM
from trt_gateway.engine.quantization.apply import adopt_scales, quantize_linears
from trt_gateway.engine.quantization.checkpoint import is_quantization_tensor, split_fp8_state
from trt_gateway.engine.quantization.fp8 import fp8_unsupported_reason, require_fp8_device

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Older checkpoints saved RoPE buffers; the engine recomputes them.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def resolve_device(config: EngineConfig) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EngineConfigError("CUDA was requested but torch sees no GPU", field="device")
    return device


def resolve_fp8(config: EngineConfig, model_cfg: ModelConfig, device: torch.device) -> bool:
    """Whether the decoder projections run in FP8: asked for (`quantization="fp8"`, refused off Hopper), or an FP8
    checkpoint on a GPU that can (elsewhere its weights are dequantized to the engine dtype)."""
    if config.quantization == "fp8":
        require_fp8_device(device)
    elif model_cfg.fp8 is None:
        return False
    elif (reason := fp8_unsupported_reason(device)) is not None:
        logger.warning("FP8 checkpoint: weights dequantized to the engine dtype (%s)", reason)
        return False
    if config.dtype not in ("auto", "bfloat16"):
        raise EngineConfigError(f"FP8 matmuls compute in bfloat16; got dtype {config.dtype!r}", field="dtype")
    return True


def resolve_dtype(config: EngineConfig, model_cfg: ModelConfig, device: torch.device, fp8: bool = False) -> torch.dtype:
    if fp8:
        return torch.bfloat16  # resolve_fp8 refused any other dtype
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
    fp8: bool = False,
) -> LlamaForCausalLM:
    """use_kernels: the model runs its Triton kernels (CUDA only; see `kernels_usable`).
    fp8: decoder projections in FP8 (`resolve_fp8` decided; the device can): an FP8 checkpoint's as stored, any
    other weights quantized per output channel here. Without it an FP8 checkpoint's weights are dequantized."""
    model = (
        _dummy_model(cfg, device, dtype, max_positions, use_kernels)
        if dummy
        else _checkpoint_model(path, cfg, device, dtype, max_positions, use_kernels, fp8)
    )
    if fp8 and (dummy or cfg.fp8 is None):
        count = quantize_linears(model)
        logger.info("fp8: %d projections quantized per output channel", count)
    model.fuse_projections()
    return model


def kernels_usable(device: torch.device, cfg: ModelConfig) -> bool:
    """Triton kernels run on CUDA devices when triton is installed and the head size suits the attention kernels
    (a power of two from 16 to 128: 64 and 128 cover Llama, Mistral and Qwen; Gemma's 256 has never been run through
    their tile sizes on a GPU, so it takes the torch paths); elsewhere the torch paths do."""
    head_dim = cfg.head_dim
    if device.type != "cuda" or head_dim < 16 or head_dim > 128 or head_dim & (head_dim - 1):
        return False
    if cfg.attn_logit_softcap is not None:  # Gemma2: the attention kernels have no soft-capping
        return False
    from trt_gateway.engine import kernels

    return kernels.available()


def _checkpoint_model(
    path: str | Path,
    cfg: ModelConfig,
    device: torch.device,
    dtype: torch.dtype,
    max_positions: int,
    use_kernels: bool,
    fp8: bool,
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

    scales: dict[str, torch.Tensor] = {}
    if gguf_file is not None:
        heads = (cfg.num_attention_heads, cfg.num_key_value_heads)
        state = gguf_checkpoint.load_state_dict(gguf_file, expected, *heads, dtype, device)
    else:
        state = _read_safetensors(files, expected, cfg, device, dtype)
        if cfg.fp8:
            state, scales = split_fp8_state(state, dtype, fp8)
    if cfg.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight  # type: ignore[assignment]  # one Parameter
    adopt_scales(model, scales)
    return model.eval()


def _read_safetensors(
    files: list[Path], expected: dict[str, tuple[int, ...]], cfg: ModelConfig, device: torch.device, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    located = _check_headers(files, expected, cfg.tie_word_embeddings, is_quantization_tensor if cfg.fp8 else None)
    state: dict[str, torch.Tensor] = {}
    device_name = str(device) if device.type != "cuda" or device.index is not None else "cuda:0"
    for file, names in located.items():
        with safe_open(str(file), framework="pt", device=device_name) as f:
            for name in names:
                tensor = f.get_tensor(name)
                state[name] = tensor if cfg.fp8 else tensor.to(dtype)  # FP8 tensors: split_fp8_state casts
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
            tensor.fill_(0.0 if cfg.gemma_norms else 1.0)  # Gemma scales by 1 + weight
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


def _check_headers(
    files: list[Path], expected: dict[str, tuple[int, ...]], tied: bool, extra: Callable[[str], bool] | None = None
) -> dict[Path, list[str]]:
    """Map each file to the tensor names to read from it; raise naming missing, unexpected or misshapen tensors.
    extra: names read too but checked by their reader (an FP8 checkpoint's scales)."""
    located: dict[Path, list[str]] = {}
    found: set[str] = set()
    unexpected: list[str] = []
    mismatched: list[str] = []
    for file in files:
        with _unreadable_as_config_error(file), safe_open(str(file), framework="pt", device="cpu") as f:
            for name in f.keys():
                if name.endswith(_IGNORED_SUFFIXES) or (tied and name == "lm_head.weight"):
                    continue
                if extra is not None and extra(name):
                    located.setdefault(file, []).append(name)
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
    refuse_mismatched_weights("checkpoint does not match its config.json", missing, mismatched, unexpected)
    return located


@contextlib.contextmanager
def _unreadable_as_config_error(file: Path) -> Iterator[None]:
    """A truncated or corrupt safetensors file is a bad checkpoint (exit 2 naming the file), not an engine bug.
    Opening checks the header and that it covers the file, so the header pass finds truncation too."""
    try:
        yield
    except (SafetensorError, OSError) as exc:
        raise EngineConfigError(f"{file} is corrupt or unreadable ({exc})", field="model") from exc
