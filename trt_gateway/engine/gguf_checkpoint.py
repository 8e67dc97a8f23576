"""Read a Llama-family GGUF file (llama.cpp's single-file checkpoint) as the engine reads an HF checkpoint.

A GGUF holds the config as metadata under llama.cpp's key names, the tokenizer (see `gguf_tokenizer`) and the
weights, most of them quantised in blocks. The engine computes in one float dtype, so every tensor is dequantised
at load (with the `gguf` package's reference dequantisers: F32, F16, BF16, Q4_0/1, Q5_0/1, Q8_0, the K-quants,
...) and cast to the engine dtype: the file's size on disk is not the model's size in memory.

Two llama.cpp conventions are undone so the weights are the HF ones, bit for bit after dequantisation:
- names: `blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`;
- for `llama`, the converter permuted the rows of q and k (per head, the two rotary halves interleaved, the
  layout of llama.cpp's RoPE); they are put back in HF's half-split order. Qwen2 files are not permuted.

The `gguf` package is imported when a GGUF is read, so HF-format checkpoints do not need it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from trt_gateway.engine.engine_config import EngineConfigError, refuse_mismatched_weights

if TYPE_CHECKING:
    from gguf import GGUFReader

GGUF_SUFFIX = ".gguf"
# general.architecture -> the HF architecture the engine implements it as.
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
_PERMUTED_QK = ("llama",)  # converters that interleaved q/k rows for llama.cpp's RoPE
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_output.bias": "self_attn.o_proj.bias",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER = re.compile(r"^blk\.(\d+)\.(.+)$")


def find_gguf(path: str | Path) -> Path | None:
    """The GGUF file `path` names: the file itself, or the one *.gguf in a folder that has no config.json.
    None for an HF-format folder (or anything else). A folder with several GGUF files is refused: which one is
    meant cannot be guessed."""
    path = Path(path)
    if path.suffix == GGUF_SUFFIX and path.is_file():
        return path
    if not path.is_dir() or (path / "config.json").is_file():
        return None
    files = sorted(p for p in path.glob(f"*{GGUF_SUFFIX}") if p.is_file())
    if len(files) > 1:
        names = ", ".join(p.name for p in files)
        raise EngineConfigError(f"{str(path)!r} holds {len(files)} GGUF files ({names}); name one", field="model")
    return files[0] if files else None


@dataclass(frozen=True, slots=True)
class GgufMetadata:
    """A GGUF file's key/value metadata as plain Python values (arrays of strings stay lists)."""

    path: Path
    values: dict[str, Any]

    @property
    def architecture(self) -> str:
        return str(self.values.get("general.architecture", ""))

    def arch(self, key: str, default: Any = None) -> Any:
        """An architecture-scoped key: arch("block_count") reads `llama.block_count` in a llama file."""
        return self.values.get(f"{self.architecture}.{key}", default)


def read_metadata(path: str | Path) -> GgufMetadata:
    reader = _reader(Path(path))
    values: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        value = field.contents()
        values[key] = value.tolist() if hasattr(value, "tolist") else value
    return GgufMetadata(Path(path), values)


def hf_config(meta: GgufMetadata, tensor_names: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config.json, generation_config.json) dicts equivalent to the file's metadata, for `parse_model_config`."""
    arch = meta.architecture
    if arch not in ARCHITECTURES:
        raise EngineConfigError(
            f"GGUF architecture {arch!r} is not supported; supported: {', '.join(ARCHITECTURES)}",
            field="gguf:general.architecture",
        )
    if "rope_freqs.weight" in tensor_names:
        # Llama 3.1+ files carry the llama3 RoPE scaling only as per-frequency factors, not its parameters.
        raise EngineConfigError(
            "GGUF files with a rope_freqs tensor (llama3 RoPE scaling) are not supported", field="gguf:rope_freqs"
        )
    heads = _required(meta, "attention.head_count")
    hidden = _required(meta, "embedding_length")
    tokens = meta.values.get("tokenizer.ggml.tokens") or []
    config: dict[str, Any] = {
        "architectures": [ARCHITECTURES[arch]],
        "vocab_size": int(meta.arch("vocab_size") or len(tokens)),
        "hidden_size": hidden,
        "intermediate_size": _required(meta, "feed_forward_length"),
        "num_hidden_layers": _required(meta, "block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta.arch("attention.head_count_kv") or heads),
        "head_dim": int(meta.arch("attention.key_length") or meta.arch("rope.dimension_count") or hidden // heads),
        "rms_norm_eps": float(meta.arch("attention.layer_norm_rms_epsilon", 1e-6)),
        "max_position_embeddings": _required(meta, "context_length"),
        "rope_theta": float(meta.arch("rope.freq_base", 10000.0)),
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "attention_bias": "blk.0.attn_q.bias" in tensor_names and arch == "llama",
    }
    scaling = meta.arch("rope.scaling.type")
    if scaling not in (None, "none"):
        config["rope_scaling"] = {"rope_type": scaling, "factor": float(meta.arch("rope.scaling.factor", 0.0))}
    if (window := meta.arch("attention.sliding_window")) is not None:
        config["sliding_window"] = int(window)
    eos = meta.values.get("tokenizer.ggml.eos_token_id")
    if eos is not None:
        config["eos_token_id"] = int(eos)
    return config, {}


def tensor_names(path: str | Path) -> set[str]:
    return {t.name for t in _reader(Path(path)).tensors}


def load_state_dict(
    path: str | Path,
    expected: dict[str, tuple[int, ...]],
    num_heads: int,
    num_kv_heads: int,
    dtype: torch.dtype,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """Every weight of the file under its HF name, dequantised, un-permuted and cast to `dtype` on `device`.

    `expected` maps the model's parameter names to shapes (tied lm_head left out); a file that does not match it
    is refused naming the tensors at fault, before anything is dequantised."""
    from gguf import dequantize

    reader = _reader(Path(path))
    arch = read_metadata(path).architecture
    plan: list[tuple[str, Any]] = []
    unexpected: list[str] = []
    mismatched: list[str] = []
    for tensor in reader.tensors:
        name = hf_name(tensor.name)
        if name is None or name not in expected:
            unexpected.append(tensor.name)
            continue
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))  # GGUF lists dimensions innermost first
        if shape != expected[name]:
            mismatched.append(f"{tensor.name}: file {shape}, model expects {expected[name]}")
            continue
        plan.append((name, tensor))
    missing = sorted(set(expected) - {name for name, _ in plan} - {m.split(":")[0] for m in mismatched})
    refuse_mismatched_weights("GGUF tensors do not match its metadata", missing, mismatched, unexpected)

    state: dict[str, torch.Tensor] = {}
    for name, tensor in plan:
        try:
            array = dequantize(tensor.data, tensor.tensor_type)
        except NotImplementedError as exc:
            raise EngineConfigError(
                f"tensor {tensor.name}: GGUF type {tensor.tensor_type.name} cannot be dequantised ({exc})",
                field="model",
            ) from exc
        weights = torch.from_numpy(array.reshape(expected[name]).copy())
        if arch in _PERMUTED_QK and name.endswith(("q_proj.weight", "q_proj.bias")):
            weights = unpermute_rotary(weights, num_heads)
        elif arch in _PERMUTED_QK and name.endswith(("k_proj.weight", "k_proj.bias")):
            weights = unpermute_rotary(weights, num_kv_heads)
        state[name] = weights.to(device=device, dtype=dtype)
    return state


def hf_name(gguf_name: str) -> str | None:
    """The HF parameter name of a GGUF tensor name; None for a tensor the engine has no place for."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    match = _LAYER.match(gguf_name)
    if match is None or match.group(2) not in _LAYER_NAMES:
        return None
    return f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}"


def permute_rotary(weights: torch.Tensor, num_heads: int) -> torch.Tensor:
    """HF's q/k row order -> llama.cpp's: within each head, row i of the first half and row i of the second half
    (the pair RoPE rotates together) become neighbours. Tests use it to write GGUF files the way llama.cpp does."""
    rows = weights.shape[0]
    return (
        weights.reshape(num_heads, 2, rows // num_heads // 2, *weights.shape[1:]).transpose(1, 2).reshape(weights.shape)
    )


def unpermute_rotary(weights: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The inverse of `permute_rotary`: neighbouring rows of each head back into the two rotary halves."""
    rows = weights.shape[0]
    return (
        weights.reshape(num_heads, rows // num_heads // 2, 2, *weights.shape[1:]).transpose(1, 2).reshape(weights.shape)
    )


def _required(meta: GgufMetadata, key: str) -> int:
    value = meta.arch(key)
    if not isinstance(value, int) or value < 1:
        raise EngineConfigError(f"must be a positive integer, got {value!r}", field=f"gguf:{meta.architecture}.{key}")
    return value


@functools.lru_cache(maxsize=2)
def _cached_reader(path: Path, mtime_ns: int, size: int) -> GGUFReader:
    from gguf import GGUFReader

    try:
        return GGUFReader(path)
    except (ValueError, OSError, KeyError, IndexError) as exc:  # bad magic, truncated file, unknown types
        raise EngineConfigError(f"{str(path)!r} is not a readable GGUF file: {exc}", field="model") from exc


def _reader(path: Path) -> GGUFReader:
    # Config, weights and tokenizer are read one after another at start-up; parsing the metadata (tens of thousands
    # of vocabulary strings) once is enough. The key changes when the file does.
    stat = path.stat()
    return _cached_reader(path.resolve(), stat.st_mtime_ns, stat.st_size)
