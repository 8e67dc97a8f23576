"""What the engine needs to know about a checkpoint, parsed from its config.json (and generation_config.json).

Parsing is where an unsupported checkpoint is refused: an unknown architecture, an activation, a RoPE type or a
quantisation this engine does not implement raises `EngineConfigError` naming the config key, at start-up, instead
of producing wrong tokens later. Both the transformers v4 (`rope_theta` + `rope_scaling`) and v5 (`rope_parameters`)
spellings are read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trt_gateway.engine.engine_config import EngineConfigError

# architecture name in config.json -> attention layout. One model file (models/llama.py) covers all three; they differ
# only in which projections carry a bias.
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True, slots=True)
class RopeConfig:
    rope_type: str = "default"
    theta: float = 10000.0
    factor: float = 1.0  # linear and llama3
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3
    original_max_position_embeddings: int = 8192  # llama3


@dataclass(frozen=True, slots=True)
class ModelConfig:
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position_embeddings: int
    rope: RopeConfig
    qkv_bias: bool  # Qwen2 always; Llama when attention_bias
    o_bias: bool  # Llama when attention_bias (HF puts the bias on o_proj too); never Qwen2/Mistral
    mlp_bias: bool
    tie_word_embeddings: bool
    eos_token_ids: tuple[int, ...]
    torch_dtype: str | None  # the checkpoint's dtype name, e.g. "bfloat16"
    sliding_window: int | None  # None when every layer attends to the full context
    initializer_range: float = 0.02  # std of random weights (load_format "dummy")

    @classmethod
    def from_pretrained(cls, path: str | Path) -> ModelConfig:
        """From an HF checkpoint folder, or a GGUF file (or a folder holding one): see `gguf_checkpoint`."""
        from trt_gateway.engine import gguf_checkpoint

        path = Path(path)
        gguf_file = gguf_checkpoint.find_gguf(path)
        if gguf_file is not None:
            meta = gguf_checkpoint.read_metadata(gguf_file)
            return parse_model_config(*gguf_checkpoint.hf_config(meta, gguf_checkpoint.tensor_names(gguf_file)))
        config_file = path / "config.json"
        if not config_file.is_file():
            raise EngineConfigError(f"no config.json in {str(path)!r}", field="model")
        raw = json.loads(config_file.read_text())
        generation_file = path / "generation_config.json"
        generation = json.loads(generation_file.read_text()) if generation_file.is_file() else {}
        return parse_model_config(raw, generation)


def parse_model_config(raw: dict[str, Any], generation: dict[str, Any] | None = None) -> ModelConfig:
    """Validate an HF config dict. Every refusal names the config.json key at fault."""
    architectures = raw.get("architectures") or []
    arch = next((a for a in architectures if a in SUPPORTED_ARCHITECTURES), None)
    if arch is None:
        raise EngineConfigError(
            f"architectures={architectures!r} is not supported; supported: {', '.join(SUPPORTED_ARCHITECTURES)}",
            field="config.json:architectures",
        )
    if raw.get("quantization_config"):
        raise EngineConfigError("quantized checkpoints are not supported", field="config.json:quantization_config")
    act = raw.get("hidden_act", "silu")
    if act != "silu":
        raise EngineConfigError(f"hidden_act={act!r} is not supported (only 'silu')", field="config.json:hidden_act")

    hidden = _int(raw, "hidden_size")
    heads = _int(raw, "num_attention_heads")
    kv_heads = int(raw.get("num_key_value_heads") or heads)
    if heads % kv_heads:
        raise EngineConfigError(
            f"num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}",
            field="config.json:num_key_value_heads",
        )
    head_dim = int(raw.get("head_dim") or hidden // heads)
    if head_dim % 2:
        raise EngineConfigError(f"head_dim={head_dim} must be even for RoPE", field="config.json:head_dim")

    is_qwen2 = arch == "Qwen2ForCausalLM"
    attention_bias = bool(raw.get("attention_bias", False))
    return ModelConfig(
        architecture=arch,
        vocab_size=_int(raw, "vocab_size"),
        hidden_size=hidden,
        intermediate_size=_int(raw, "intermediate_size"),
        num_hidden_layers=_int(raw, "num_hidden_layers"),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
        max_position_embeddings=_int(raw, "max_position_embeddings"),
        rope=_parse_rope(raw),
        qkv_bias=is_qwen2 or attention_bias,
        o_bias=attention_bias and arch == "LlamaForCausalLM",
        mlp_bias=bool(raw.get("mlp_bias", False)) and arch == "LlamaForCausalLM",
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        eos_token_ids=_eos_ids(raw, generation or {}),
        torch_dtype=raw.get("dtype") or raw.get("torch_dtype"),
        sliding_window=_sliding_window(raw, is_qwen2),
        initializer_range=float(raw.get("initializer_range", 0.02)),
    )


def _int(raw: dict[str, Any], key: str) -> int:
    value = raw.get(key)
    if not isinstance(value, int) or value < 1:
        raise EngineConfigError(f"must be a positive integer, got {value!r}", field=f"config.json:{key}")
    return value


def _parse_rope(raw: dict[str, Any]) -> RopeConfig:
    # transformers v5 folds theta into rope_parameters; v4 keeps rope_theta beside an optional rope_scaling.
    params = dict(raw.get("rope_parameters") or raw.get("rope_scaling") or {})
    theta = float(params.get("rope_theta", raw.get("rope_theta", 10000.0)))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise EngineConfigError(
            f"rope type {rope_type!r} is not supported; supported: {', '.join(SUPPORTED_ROPE_TYPES)}",
            field="config.json:rope_scaling",
        )
    partial = float(params.get("partial_rotary_factor", raw.get("partial_rotary_factor", 1.0)))
    if partial != 1.0:
        raise EngineConfigError(
            f"partial_rotary_factor={partial} is not supported", field="config.json:partial_rotary_factor"
        )
    if rope_type == "default":
        return RopeConfig(theta=theta)
    factor = float(params.get("factor", 0.0))
    if factor < 1.0:
        raise EngineConfigError(f"{rope_type} rope needs factor >= 1, got {factor}", field="config.json:rope_scaling")
    if rope_type == "linear":
        return RopeConfig(rope_type="linear", theta=theta, factor=factor)
    try:
        return RopeConfig(
            rope_type="llama3",
            theta=theta,
            factor=factor,
            low_freq_factor=float(params["low_freq_factor"]),
            high_freq_factor=float(params["high_freq_factor"]),
            original_max_position_embeddings=int(params["original_max_position_embeddings"]),
        )
    except KeyError as exc:
        raise EngineConfigError(f"llama3 rope is missing {exc.args[0]!r}", field="config.json:rope_scaling") from exc


def _eos_ids(raw: dict[str, Any], generation: dict[str, Any]) -> tuple[int, ...]:
    # generation_config.json often lists more end tokens than config.json (Llama 3 instruct: <|eot_id|>); honour both.
    ids: list[int] = []
    for source in (raw.get("eos_token_id"), generation.get("eos_token_id")):
        for value in source if isinstance(source, list) else [source]:
            if isinstance(value, int) and value not in ids:
                ids.append(value)
    return tuple(ids)


def _sliding_window(raw: dict[str, Any], is_qwen2: bool) -> int | None:
    window = raw.get("sliding_window")
    if not window:
        return None
    layer_types = raw.get("layer_types")
    if layer_types is not None:  # transformers v5 says per layer which ones slide
        return int(window) if "sliding_attention" in layer_types else None
    if is_qwen2 and not raw.get("use_sliding_window", False):
        return None
    return int(window)
