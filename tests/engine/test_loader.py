"""Start-up checks: config parsing, RoPE frequencies against HF, and clear errors for checkpoints the engine
cannot run (architecture, RoPE type, activation, layer types, missing/misshapen/unexpected weights, bad engine
config); which layers slide and what each family reads."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from engine_helpers import build_hf_model, make_engine
from safetensors.torch import load_file, save_file

from trt_gateway.engine import EngineConfig, EngineConfigError
from trt_gateway.engine.layers.rotary import inverse_frequencies
from trt_gateway.engine.model_config import parse_model_config

BASE = {
    "architectures": ["LlamaForCausalLM"],
    "vocab_size": 32,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "max_position_embeddings": 64,
}


@pytest.mark.parametrize(
    "rope",
    [
        {"rope_type": "default", "rope_theta": 10000.0},
        {"rope_type": "linear", "factor": 2.5, "rope_theta": 500000.0},
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
            "rope_theta": 500000.0,
        },
    ],
)
def test_rope_frequencies_match_hf(rope):
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf_config = LlamaConfig(hidden_size=1024, num_attention_heads=8, rope_parameters=dict(rope))
    if rope["rope_type"] == "default":
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        want, _ = LlamaRotaryEmbedding.compute_default_rope_parameters(hf_config)
    else:
        want, _ = ROPE_INIT_FUNCTIONS[rope["rope_type"]](hf_config, "cpu")
    cfg = parse_model_config({**BASE, "hidden_size": 1024, "num_attention_heads": 8, "rope_parameters": rope})
    torch.testing.assert_close(inverse_frequencies(cfg.rope, cfg.head_dim), want, rtol=0, atol=0)


def test_transformers_v4_rope_spelling_is_read():
    cfg = parse_model_config({**BASE, "rope_theta": 500000.0, "rope_scaling": {"type": "linear", "factor": 4.0}})
    assert (cfg.rope.rope_type, cfg.rope.theta, cfg.rope.factor) == ("linear", 500000.0, 4.0)


def test_qwen2_has_qkv_bias_and_llama_attention_bias_covers_o_proj():
    qwen = parse_model_config({**BASE, "architectures": ["Qwen2ForCausalLM"]})
    llama = parse_model_config({**BASE, "attention_bias": True})
    assert (qwen.qkv_bias, qwen.o_bias) == (True, False)
    assert (llama.qkv_bias, llama.o_bias) == (True, True)


def test_eos_ids_merge_config_and_generation_config():
    cfg = parse_model_config({**BASE, "eos_token_id": 2}, {"eos_token_id": [2, 7, 9]})
    assert cfg.eos_token_ids == (2, 7, 9)


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"architectures": ["GPT2LMHeadModel"]}, "config.json:architectures", "not supported"),
        ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0}}, "config.json:rope_scaling", "'yarn'"),
        ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0}}, "config.json:rope_scaling", "'dynamic'"),
        ({"rope_parameters": {"rope_type": "llama3", "factor": 8.0}}, "config.json:rope_scaling", "low_freq_factor"),
        ({"hidden_act": "gelu"}, "config.json:hidden_act", "gelu"),
        (
            {"architectures": ["Gemma2ForCausalLM"], "hidden_activation": "relu"},
            "config.json:hidden_activation",
            "relu",
        ),
        ({"sliding_window": 8, "layer_types": ["chunked_attention"]}, "config.json:layer_types", "chunked_attention"),
        ({"sliding_window": -3}, "config.json:sliding_window", "positive"),
        ({"num_key_value_heads": 3}, "config.json:num_key_value_heads", "multiple"),
        ({"quantization_config": {"quant_method": "awq"}}, "config.json:quantization_config", "quantized"),
    ],
)
def test_unsupported_configs_are_refused_with_the_key(change, field, words):
    with pytest.raises(EngineConfigError) as exc:
        parse_model_config({**BASE, **change})
    assert exc.value.field == field and words in str(exc.value)


@pytest.fixture
def checkpoint_copy(llama, tmp_path):
    path = tmp_path / "ckpt"
    shutil.copytree(llama.path, path)
    return path


def _rewrite_weights(path, edit):
    file = path / "model.safetensors"
    tensors = load_file(file)
    edit(tensors)
    save_file(tensors, file, metadata={"format": "pt"})


def test_missing_weight_is_named(checkpoint_copy):
    _rewrite_weights(checkpoint_copy, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(EngineConfigError, match=r"missing weights \(1\): model.layers.1.mlp.up_proj.weight"):
        make_engine(checkpoint_copy)


def test_shape_mismatch_is_named(checkpoint_copy):
    def shrink(t):
        t["model.norm.weight"] = t["model.norm.weight"][:10].clone()

    _rewrite_weights(checkpoint_copy, shrink)
    with pytest.raises(EngineConfigError, match=r"shape mismatch \(1\): model.norm.weight: checkpoint \(10,\)"):
        make_engine(checkpoint_copy)


def test_unexpected_weight_is_named(checkpoint_copy):
    def add(t):
        t["model.layers.0.self_attn.q_norm.weight"] = torch.ones(4)

    _rewrite_weights(checkpoint_copy, add)
    with pytest.raises(EngineConfigError, match="unexpected weights .*q_norm"):
        make_engine(checkpoint_copy)


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_a_truncated_checkpoint_file_is_refused_naming_it(checkpoint_copy, name):
    file = checkpoint_copy / name
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    with pytest.raises(EngineConfigError, match=f"{name} is (corrupt or unreadable|not a readable JSON file)") as exc:
        make_engine(checkpoint_copy)
    assert exc.value.field == "model"


def test_no_safetensors_is_refused(checkpoint_copy):
    (checkpoint_copy / "model.safetensors").unlink()
    with pytest.raises(EngineConfigError, match="no \\*.safetensors"):
        make_engine(checkpoint_copy)


def test_sliding_window_shorter_than_the_context_is_served_in_full(tmp_path):
    # Before sliding windows were implemented, such a model was capped at max_model_len <= window.
    model = build_hf_model("mistral", sliding_window=32)
    model.save_pretrained(tmp_path)
    engine = make_engine(tmp_path)
    assert engine.max_model_len == 256
    windows = [layer.shape.window for layer in engine.model_runner.model.attention_layers()]
    assert windows == [32, 32]


@pytest.mark.parametrize(
    ("change", "windows"),
    [
        ({"architectures": ["MistralForCausalLM"], "sliding_window": 8}, (8, 8, 8, 8)),
        ({"architectures": ["MistralForCausalLM"], "sliding_window": None}, (None,) * 4),
        # transformers v5 lists each layer's kind
        ({"sliding_window": 8, "layer_types": ["sliding_attention", "full_attention"] * 2}, (8, None, 8, None)),
        ({"sliding_window": 8, "layer_types": ["full_attention"] * 4}, (None,) * 4),
        # Qwen without layer_types: only with use_sliding_window, from max_window_layers on
        ({"architectures": ["Qwen2ForCausalLM"], "sliding_window": 8}, (None,) * 4),
        (
            {
                "architectures": ["Qwen3ForCausalLM"],
                "sliding_window": 8,
                "use_sliding_window": True,
                "max_window_layers": 2,
            },
            (None, None, 8, 8),
        ),  # fmt: skip
        # Gemma2 without layer_types: even layers slide
        ({"architectures": ["Gemma2ForCausalLM"], "sliding_window": 8}, (8, None, 8, None)),
    ],
)
def test_sliding_window_layers(change, windows):
    cfg = parse_model_config({**BASE, "num_hidden_layers": 4, **change})
    assert tuple(cfg.window_of(i) for i in range(4)) == windows


def test_family_options_are_read():
    qwen3 = parse_model_config({**BASE, "architectures": ["Qwen3ForCausalLM"], "attention_bias": True})
    assert (qwen3.qk_norm, qwen3.qkv_bias, qwen3.o_bias, qwen3.gemma_norms) == (True, True, True, False)
    gemma = parse_model_config({**BASE, "architectures": ["GemmaForCausalLM"], "hidden_act": "gelu", "head_dim": 8})
    assert (gemma.hidden_act, gemma.gemma_norms, gemma.embed_scale, gemma.head_dim) == (
        "gelu_pytorch_tanh",
        True,
        4.0,
        8,
    )
    gemma2 = parse_model_config(
        {**BASE, "architectures": ["Gemma2ForCausalLM"], "query_pre_attn_scalar": 64, "final_logit_softcapping": 30.0}
    )
    assert (gemma2.sandwich_norms, gemma2.attention_scale, gemma2.final_logit_softcap) == (True, 0.125, 30.0)
    assert gemma2.attn_logit_softcap is None and gemma2.hidden_act == "gelu_pytorch_tanh"


def test_a_chosen_max_model_len_the_kv_budget_cannot_hold_is_refused(llama):
    with pytest.raises(EngineConfigError, match="lower max_model_len") as exc:
        make_engine(llama.path, num_kv_blocks=40, max_model_len=256)  # 160 tokens < 256
    assert exc.value.field == "num_kv_blocks"


def test_the_default_max_model_len_is_lowered_to_what_the_kv_budget_holds(llama, caplog):
    with caplog.at_level(logging.WARNING, logger="trt_gateway.engine.kv_cache"):
        engine = make_engine(llama.path, num_kv_blocks=40)  # 160 tokens; the model allows 256
    assert engine.max_model_len == 160 and engine.bounds.max_model_len == 160
    [warning] = caplog.records
    assert "lowered from 256" in warning.getMessage() and "160" in warning.getMessage()


def test_a_kv_budget_below_a_useful_length_is_refused_naming_the_budget(llama):
    with pytest.raises(EngineConfigError, match="fewer than the 128 one sequence needs") as exc:
        make_engine(llama.path, num_kv_blocks=10)  # 40 tokens
    assert exc.value.field == "num_kv_blocks"
    with pytest.raises(EngineConfigError, match="raise kv_cache_bytes \\(--kv-cache-bytes\\)") as exc:
        make_engine(llama.path, kv_cache_bytes=1000)
    assert exc.value.field == "kv_cache_bytes"


def test_tied_embeddings_share_one_parameter(checkpoints):
    engine = make_engine(checkpoints["qwen2"].path)
    model = engine.model_runner.model
    assert model.lm_head.weight is model.model.embed_tokens.weight


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_num_seqs": -1}, "max_num_seqs"),
        ({"device": "tpu"}, "device"),
        ({"dtype": "int8"}, "dtype"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"max_model_len": 1}, "max_model_len"),
    ],
)
def test_engine_config_validation_names_the_field(kwargs, field):
    with pytest.raises(EngineConfigError) as exc:
        EngineConfig(model="x", **kwargs)
    assert exc.value.field == field


def test_config_json_without_supported_architecture_fails_at_start(checkpoint_copy):
    config = json.loads((checkpoint_copy / "config.json").read_text())
    config["architectures"] = ["FalconForCausalLM"]
    (checkpoint_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(EngineConfigError, match="FalconForCausalLM") as exc:
        make_engine(checkpoint_copy)
    # one error naming the architecture and listing every supported one
    assert exc.value.field == "config.json:architectures"
    assert str(exc.value).endswith(
        "supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, GemmaForCausalLM, "
        "Gemma2ForCausalLM"
    )
