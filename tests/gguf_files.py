"""Write GGUF files from HF checkpoints the way llama.cpp's converter does, for the GGUF tests and benchmarks.

Written here with `gguf.GGUFWriter` and `gguf.quants.quantize`, independently of the engine's reader: the metadata
keys, the tensor names and the q/k row permutation follow llama.cpp's `convert_hf_to_gguf.py`. A weight whose rows
are not a whole number of quantisation blocks stays F32 (llama.cpp falls back likewise). gguf-py cannot quantise the
K-quants, so Q4_K / Q6_K blocks are random quants with fixed, sane scales: still a real file in that format, which
both readers must dequantise identically.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

GLOBAL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
          "lm_head.weight": "output.weight"}  # fmt: skip
LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
ARCH = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}


def write_gguf(checkpoint: Path, out: Path, qtype: str = "F32", *, seed: int = 0) -> Path:
    """Convert the HF checkpoint folder `checkpoint` (config.json, safetensors, tokenizer.json) into `out`."""
    import gguf

    config = json.loads((checkpoint / "config.json").read_text())
    arch = ARCH[config["architectures"][0]]
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    rope = config.get("rope_parameters") or {}
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_name(checkpoint.name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    _write_tokenizer(writer, checkpoint, config)

    state = {}
    for file in sorted(checkpoint.glob("*.safetensors")):
        state.update(load_file(file))
    rng = np.random.default_rng(seed)
    quant = gguf.GGMLQuantizationType[qtype]
    for name, tensor in state.items():
        if config.get("tie_word_embeddings") and name == "lm_head.weight":
            continue
        weights = tensor.float()
        if arch == "llama" and ".q_proj." in name:
            weights = _permute(weights, heads)
        elif arch == "llama" and ".k_proj." in name:
            weights = _permute(weights, kv_heads)
        data, dtype = _encode(weights.numpy(), quant, rng)
        writer.add_tensor(_gguf_name(name), data, raw_dtype=dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _permute(weights: torch.Tensor, n_head: int) -> torch.Tensor:
    # llama.cpp's converter: per head, interleave the two rotary halves (its RoPE rotates neighbouring pairs).
    shape = weights.shape
    return weights.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _gguf_name(name: str) -> str:
    if name in GLOBAL:
        return GLOBAL[name]
    _, _, layer, rest = name.split(".", 3)
    return f"blk.{layer}.{LAYER[rest]}"


def _encode(array: np.ndarray, quant, rng: np.random.Generator):  # noqa: ANN001, ANN202 - gguf types
    import gguf
    from gguf.quants import quantize

    block, type_size = gguf.GGML_QUANT_SIZES[quant]
    if array.ndim != 2 or array.shape[1] % block:
        return array.astype(np.float32), gguf.GGMLQuantizationType.F32
    if quant == gguf.GGMLQuantizationType.BF16:
        return quantize(array, quant), quant
    if quant in (gguf.GGMLQuantizationType.Q4_K, gguf.GGMLQuantizationType.Q6_K):
        return _random_k_blocks(array.shape, quant, block, type_size, rng), quant
    return quantize(array, quant), quant


def _random_k_blocks(shape, quant, block, type_size, rng):  # noqa: ANN001, ANN202
    import gguf

    rows, cols = shape
    blocks = rng.integers(0, 256, size=(rows, cols // block, type_size), dtype=np.uint8)
    scale = np.frombuffer(np.float16(2e-4).tobytes(), dtype=np.uint8)
    if quant == gguf.GGMLQuantizationType.Q4_K:  # d, dmin (f16) lead the block
        blocks[..., 0:2] = scale
        blocks[..., 2:4] = np.frombuffer(np.float16(1e-4).tobytes(), dtype=np.uint8)
    else:  # Q6_K: d (f16) ends the block; its int8 scales precede it
        blocks[..., -2:] = np.frombuffer(np.float16(2e-5).tobytes(), dtype=np.uint8)
    return blocks.reshape(rows, -1)


def _write_tokenizer(writer, checkpoint: Path, config: dict) -> None:  # noqa: ANN001 - gguf.GGUFWriter
    import gguf

    spec = json.loads((checkpoint / "tokenizer.json").read_text())
    tok_config_file = checkpoint / "tokenizer_config.json"
    tok_config = json.loads(tok_config_file.read_text()) if tok_config_file.is_file() else {}
    model = spec["model"]
    assert model["type"] == "BPE", "only byte-level BPE checkpoints are converted here"
    tokens = [""] * config["vocab_size"]
    types = [gguf.TokenType.UNUSED] * config["vocab_size"]
    for text, index in model["vocab"].items():
        tokens[index], types[index] = text, gguf.TokenType.NORMAL
    for added in spec["added_tokens"]:
        tokens[added["id"]] = added["content"]
        types[added["id"]] = gguf.TokenType.CONTROL if added["special"] else gguf.TokenType.USER_DEFINED
    for index, text in enumerate(tokens):
        if not text:  # unused ids still need a unique spelling
            tokens[index] = f"[PAD{index}]"
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    ids = {added["content"]: added["id"] for added in spec["added_tokens"]}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for key, add in (("bos_token", writer.add_bos_token_id), ("eos_token", writer.add_eos_token_id),
                     ("pad_token", writer.add_pad_token_id)):  # fmt: skip
        if isinstance(tok_config.get(key), str) and tok_config[key] in ids:
            add(ids[tok_config[key]])
    post = json.dumps(spec.get("post_processor"))
    writer.add_add_bos_token('"SpecialToken"' in post)
    if isinstance(tok_config.get("chat_template"), str):
        writer.add_chat_template(tok_config["chat_template"])
