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
from trt_gateway.engine.model_family import family_options
from trt_gateway.engine.quantization.checkpoint import Fp8Checkpoint, parse_quantization_config

# Architecture names in config.json. One decoder (models/llama.py) covers them all: they differ in which projections
# carry a bias, per-head q/k norms (Qwen3), Gemma's norms, embedding scale and GELU MLP, Gemma2's extra norms and
# soft-capping, and which layers attend through a sliding window (`model_family.family_options`).
SUPPORTED_ARCHITECTURES = (
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "GemmaForCausalLM",
    "Gemma2ForCausalLM",
)
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
    # Which layers slide (when sliding_window is set): empty means all of them (Mistral).
    sliding_layers: tuple[bool, ...] = ()
    hidden_act: str = "silu"  # of the gated MLP: "silu" (SwiGLU) or "gelu_pytorch_tanh" (Gemma's GeGLU)
    qk_norm: bool = False  # Qwen3: RMSNorm over each head of q and k before RoPE
    gemma_norms: bool = False  # RMSNorm scales by (1 + weight), in float32 before the cast
    embed_scale: float | None = None  # Gemma: embeddings times sqrt(hidden_size)
    sandwich_norms: bool = False  # Gemma2: norms after attention and the MLP too (pre/post feed-forward)
    attention_scale: float | None = None  # softmax scale; None: head_dim ** -0.5
    attn_logit_softcap: float | None = None  # Gemma2: scores -> cap * tanh(scores / cap)
    final_logit_softcap: float | None = None  # Gemma2: the same on the logits

    def window_of(self, layer: int) -> int | None:
        """The sliding window of one layer, None where it attends to the whole context."""
        if self.sliding_window is None or (self.sliding_layers and not self.sliding_layers[layer]):
            return None
        return self.sliding_window
    fp8: Fp8Checkpoint | None = None  # the checkpoint's weights are FP8 (its quantization_config, checked)

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
        raw = _read_json(config_file)
        generation_file = path / "generation_config.json"
        generation = _read_json(generation_file) if generation_file.is_file() else {}
        return parse_model_config(raw, generation)


def _read_json(file: Path) -> dict[str, Any]:
    """A checkpoint's JSON file; a corrupt one is refused naming it (not a JSONDecodeError traceback)."""
    try:
        data = json.loads(file.read_bytes())
    except (OSError, ValueError) as exc:
        raise EngineConfigError(f"{file} is not a readable JSON file ({exc})", field="model") from exc
    if not isinstance(data, dict):
        raise EngineConfigError(f"{file} must hold a JSON object", field="model")
    return data


def parse_model_config(raw: dict[str, Any], generation: dict[str, Any] | None = None) -> ModelConfig:
    """Validate an HF config dict. Every refusal names the config.json key at fault."""
    architectures = raw.get("architectures") or []
    arch = next((a for a in architectures if a in SUPPORTED_ARCHITECTURES), None)
    if arch is None:
        raise EngineConfigError(
            f"architectures={architectures!r} is not supported; supported: {', '.join(SUPPORTED_ARCHITECTURES)}",
            field="config.json:architectures",
        )
    fp8 = parse_quantization_config(raw["quantization_config"]) if raw.get("quantization_config") else None
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
    num_layers = _int(raw, "num_hidden_layers")
    return ModelConfig(
        architecture=arch,
        vocab_size=_int(raw, "vocab_size"),
        hidden_size=hidden,
        intermediate_size=_int(raw, "intermediate_size"),
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
        max_position_embeddings=_int(raw, "max_position_embeddings"),
        rope=_parse_rope(raw),
        qkv_bias=is_qwen2 or attention_bias,
        o_bias=attention_bias and arch != "Qwen2ForCausalLM",  # Mistral has no attention_bias key
        mlp_bias=bool(raw.get("mlp_bias", False)) and arch == "LlamaForCausalLM",
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        eos_token_ids=_eos_ids(raw, generation or {}),
        torch_dtype=raw.get("dtype") or raw.get("torch_dtype"),
        initializer_range=float(raw.get("initializer_range", 0.02)),
        **family_options(arch, raw, num_layers),
        fp8=fp8,
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
