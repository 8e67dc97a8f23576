"""What sets one supported architecture's decoder apart from Llama's, read from its config.json.

`model_config.parse_model_config` reads what every family shares; `family_options` returns the rest as keyword
arguments of `ModelConfig`: the activation, Qwen3's per-head q/k norms, Gemma's norms and embedding scale, Gemma2's
extra norms, soft-capping and attention scale, and which layers attend through a sliding window. Anything this engine
would run wrongly is refused here, naming the config.json key.
"""

from __future__ import annotations

from typing import Any

from trt_gateway.engine.engine_config import EngineConfigError

_GEMMA = ("GemmaForCausalLM", "Gemma2ForCausalLM")
_QWEN = ("Qwen2ForCausalLM", "Qwen3ForCausalLM")
SUPPORTED_ACTIVATIONS = ("silu", "gelu_pytorch_tanh")
SUPPORTED_LAYER_TYPES = ("full_attention", "sliding_attention")


def family_options(arch: str, raw: dict[str, Any], num_layers: int) -> dict[str, Any]:
    options: dict[str, Any] = {"hidden_act": _activation(arch, raw)}
    options.update(_sliding(arch, raw, num_layers))
    if arch == "Qwen3ForCausalLM":
        options["qk_norm"] = True
    if arch in _GEMMA:
        options.update(gemma_norms=True, embed_scale=float(raw["hidden_size"]) ** 0.5)
    if arch == "Gemma2ForCausalLM":
        options.update(
            sandwich_norms=True,
            attention_scale=_positive(raw, "query_pre_attn_scalar", default=256) ** -0.5,
            attn_logit_softcap=_cap(raw, "attn_logit_softcapping"),
            final_logit_softcap=_cap(raw, "final_logit_softcapping"),
        )
    return options


def _activation(arch: str, raw: dict[str, Any]) -> str:
    # Gemma2 names it hidden_activation; Gemma's legacy "gelu" means the tanh approximation (HF rewrites it so).
    key = "hidden_activation" if arch == "Gemma2ForCausalLM" else "hidden_act"
    act = raw.get(key) or ("gelu_pytorch_tanh" if arch in _GEMMA else "silu")
    if arch == "GemmaForCausalLM" and act == "gelu":
        act = "gelu_pytorch_tanh"
    if act not in SUPPORTED_ACTIVATIONS:
        raise EngineConfigError(
            f"{key}={act!r} is not supported; supported: {', '.join(SUPPORTED_ACTIVATIONS)}", field=f"config.json:{key}"
        )
    return str(act)


def _sliding(arch: str, raw: dict[str, Any], num_layers: int) -> dict[str, Any]:
    """-> sliding_window and sliding_layers (empty: every layer slides)."""
    window = raw.get("sliding_window")
    if not window:
        return {"sliding_window": None}
    if not isinstance(window, int) or window < 1:
        raise EngineConfigError(f"must be a positive integer, got {window!r}", field="config.json:sliding_window")
    layer_types = raw.get("layer_types")
    if layer_types is not None:  # transformers v5 says per layer which ones slide
        if len(layer_types) != num_layers or not set(layer_types) <= set(SUPPORTED_LAYER_TYPES):
            raise EngineConfigError(
                f"layer_types={layer_types!r} must list {num_layers} of {', '.join(SUPPORTED_LAYER_TYPES)}",
                field="config.json:layer_types",
            )
        layers = tuple(kind == "sliding_attention" for kind in layer_types)
    elif arch in _QWEN:  # HF's default: layers from max_window_layers on slide, when use_sliding_window
        if not raw.get("use_sliding_window", False):
            return {"sliding_window": None}
        first = int(raw.get("max_window_layers", num_layers))
        layers = tuple(i >= first for i in range(num_layers))
    elif arch == "Gemma2ForCausalLM":  # HF's default: even layers slide, odd ones see everything
        layers = tuple(i % 2 == 0 for i in range(num_layers))
    else:
        return {"sliding_window": window}
    if not any(layers):
        return {"sliding_window": None}
    return {"sliding_window": window, "sliding_layers": () if all(layers) else layers}


def _positive(raw: dict[str, Any], key: str, default: float) -> float:
    value = raw.get(key, default)
    if not isinstance(value, int | float) or value <= 0:
        raise EngineConfigError(f"must be a positive number, got {value!r}", field=f"config.json:{key}")
    return float(value)


def _cap(raw: dict[str, Any], key: str) -> float | None:
    return None if raw.get(key) is None else _positive(raw, key, 0.0)
