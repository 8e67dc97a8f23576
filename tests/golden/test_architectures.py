"""The engine's features on the architectures beyond Llama/Qwen2, against HF transformers (and PEFT): continuous
batching of prompts of different lengths joining mid-flight, chunked prefill, prefix-cache hits, LoRA, speculative
decoding with a draft of the same architecture, and (GPU only) the Triton kernels and CUDA graphs.

The models (engine_helpers.VARIANTS): Mistral with an 8-token window (prompts and generations run far past it),
Qwen3 (q/k norms), Gemma (its norms, GeGLU, embedding scale) and Gemma2 (also soft-capping and a window on layer 0
only). Tolerances are engine_helpers.DeviceCase's, as in test_golden.py: CPU float32 exact tokens and logits within
1e-4. The plain-prefill/decode logits and single requests of each kind are in test_golden.py (parametrised over
VARIANTS).
"""

from __future__ import annotations

import pytest
import torch
from engine_golden import (
    assert_close,
    assert_same_greedy,
    check_against_hf,
    hf_greedy,
    hf_logits,
    peft_greedy,
    save_peft_adapter,
)
from engine_helpers import (
    CPU_FP32,
    NEEDS_CUDA,
    Checkpoint,
    build_hf_model,
    make_engine,
    make_request,
    prompts,
    run_until_done,
    tokens_of,
)

from trt_gateway.engine import EngineConfigError

NEW_KINDS = ["mistral_swa", "qwen3", "gemma", "gemma2"]


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_batch_chunks_and_prefix_cache_match_hf(checkpoints, device_case, kind):
    """Six requests of 3..30 tokens arrive over several steps; 7 tokens a step, so prompts are prefilled in chunks
    beside decodes (a chunk's window reaches into earlier chunks' blocks); the last two reuse cached blocks of
    earlier prompts (the same prompt, and one sharing 12 tokens), which the window must see like computed ones."""
    ckpt = checkpoints[kind]
    engine = make_engine(ckpt.path, device_case, max_num_batched_tokens=7)
    ps = prompts(4, [5, 30, 3, 19], seed=31)
    request_prompts = {"a": ps[0], "b": ps[1], "c": ps[2], "d": ps[3], "again": ps[1], "sibling": ps[3][:12] + [9] * 5}
    schedule = {0: ["a", "b"], 2: ["c"], 4: ["d"], 30: ["again", "sibling"]}
    outputs: dict = {}
    step = 0
    while step <= max(schedule) or engine.has_unfinished():
        for rid in schedule.get(step, []):
            engine.add_request(make_request(rid, max_tokens=18, logprobs=True, top_logprobs=5), request_prompts[rid])
        for out in engine.step():
            outputs.setdefault(out.request_id, []).append(out)
        step += 1
    assert outputs["again"][-1].usage.cached_tokens == 28  # 7 full blocks of the 30-token prompt
    assert outputs["sibling"][-1].usage.cached_tokens == 12
    check_against_hf(ckpt, device_case, outputs, request_prompts, 18, check_logprobs=True)
    assert engine.num_free_blocks == engine.num_total_blocks


def test_sliding_window_is_what_hf_computes(checkpoints):
    """Guards the golden tests themselves: on prompts longer than the window, HF's output depends on the window
    (so an engine ignoring it would fail them), and HF's generate agrees with its own full forward."""
    ckpt = checkpoints["mistral_swa"]
    prompt = prompts(1, [30], seed=32)[0]
    windowed = hf_logits(ckpt, CPU_FP32, prompt)
    full = build_hf_model("mistral_swa", sliding_window=None)
    assert (windowed[8:] - full(torch.tensor([prompt])).logits[0, 8:]).abs().max() > 0.1
    assert torch.allclose(windowed[:8], full(torch.tensor([prompt])).logits[0, :8].detach(), atol=1e-5)
    tokens, gen_logits = hf_greedy(ckpt, CPU_FP32, prompt, 12)
    assert_close(gen_logits, hf_logits(ckpt, CPU_FP32, prompt + tokens)[29:-1], 1e-4, "HF generate vs forward")


def test_qwen3_with_an_untied_lm_head(tmp_path):
    model = build_hf_model("qwen3", tie_word_embeddings=False)
    model.save_pretrained(tmp_path)
    ckpt = Checkpoint("qwen3_untied", tmp_path, model)
    engine = make_engine(tmp_path)
    runner_model = engine.model_runner.model
    assert runner_model.lm_head.weight is not runner_model.model.embed_tokens.weight
    prompt = prompts(1, [20], seed=33)[0]
    engine.add_request(make_request("a", max_tokens=16), prompt)
    check_against_hf(ckpt, CPU_FP32, run_until_done(engine), {"a": prompt}, 16)


def test_soft_capped_attention_never_gets_the_kernels(checkpoints):
    """Gemma2's soft-capping has no kernel: on CUDA it runs the torch attention (and so no CUDA graphs)."""
    from trt_gateway.engine.layers.attention import Attention, AttentionShape
    from trt_gateway.engine.loader import kernels_usable

    assert not kernels_usable(torch.device("cuda"), make_engine(checkpoints["gemma2"].path).model_config)
    with pytest.raises(ValueError, match="soft-capping has no kernel"):
        Attention(4, 2, 16, use_kernels=True, shape=AttentionShape(0.25, softcap=50.0))


@pytest.mark.parametrize("kind", ["qwen3", "gemma2"])
def test_lora_mixed_batch_matches_peft(tmp_path, kind):
    """Two PEFT adapters (all seven projections; attention only) and the base model in one batch."""
    base = build_hf_model(kind)
    base.save_pretrained(tmp_path / "base")
    projections = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    refs = {
        None: base,
        "all": save_peft_adapter(base, tmp_path / "all", seed=41, r=8, lora_alpha=16, target_modules=projections),
        "attn": save_peft_adapter(base, tmp_path / "attn", seed=42, r=4, lora_alpha=8, target_modules=projections[:4]),
    }
    engine = make_engine(tmp_path / "base", max_loras=2, max_lora_rank=8)
    for name in ("all", "attn"):
        engine.lora.register(name, str(tmp_path / name))
    ps = prompts(4, [7, 26, 12, 9], seed=43)
    requests = {"a": ("all", ps[0]), "b": ("attn", ps[1]), "c": (None, ps[2]), "d": ("all", ps[3])}
    for rid, (adapter, prompt) in requests.items():
        engine.add_request(make_request(rid, max_tokens=12, adapter=adapter), prompt)
    outputs = run_until_done(engine)
    for rid, (adapter, prompt) in requests.items():
        want, want_logits = peft_greedy(refs[adapter], prompt, 12)
        assert_same_greedy(tokens_of(outputs[rid]), want, want_logits, 0.0, f"{kind}/{rid} ({adapter})")
    distinct = {tuple(peft_greedy(model, ps[0], 12)[0]) for model in refs.values()}
    assert len(distinct) == 3, "the adapters do not change the output: the test would prove little"


@pytest.mark.parametrize("kind", ["mistral_swa", "gemma2"])
def test_speculative_decoding_with_a_draft_of_the_same_architecture(checkpoints, kind):
    """The draft is the target itself (every proposal is accepted): verification chunks of k+1 tokens cross the
    window, and the draft model keeps its own windowed cache. Greedy output identical to plain decoding."""
    ckpt = checkpoints[kind]
    ps = prompts(3, [4, 17, 30], seed=44)

    def generate(**spec):
        engine = make_engine(ckpt.path, **spec)
        for i, prompt in enumerate(ps):
            engine.add_request(make_request(f"r{i}", max_tokens=24), prompt)
        return engine, {rid: tokens_of(outs) for rid, outs in run_until_done(engine).items()}

    _, plain = generate()
    engine, spec = generate(speculative_mode="draft", draft_model=str(ckpt.path), num_draft_tokens=3)
    assert spec == plain
    assert engine.speculation.stats.accepted_tokens > 0


@pytest.mark.parametrize("kind", [pytest.param(kind, marks=NEEDS_CUDA) for kind in ["mistral_swa", "qwen3", "gemma"]])
def test_kernels_and_graphs_match_the_torch_paths_on_cuda(checkpoints, kind):
    """The Triton attention with a window, the q/k norms through the norm kernel, Gemma's norms and GeGLU beside
    kernels, and CUDA graph replays of all that, against the plain torch paths on the same GPU."""
    ckpt = checkpoints[kind]
    ps = dict(zip("abcd", prompts(4, [2, 11, 25, 40], seed=45), strict=True))

    def run(**overrides):
        engine = make_engine(ckpt.path, device="cuda", dtype="float32", **overrides)
        for i, (rid, prompt) in enumerate(ps.items()):
            engine.add_request(make_request(rid, max_tokens=8 + 5 * i, logprobs=True, top_logprobs=3), prompt)
        return engine, run_until_done(engine)

    fast_engine, fast = run()
    assert fast_engine.use_kernels and fast_engine.model_runner.graphs is not None
    plain_engine, plain = run(kernels=False)
    assert not plain_engine.use_kernels
    for rid in ps:
        got = [lp.logprob for o in fast[rid] for lp in o.logprobs]
        want = [lp.logprob for o in plain[rid] for lp in o.logprobs]
        assert tokens_of(fast[rid]) == tokens_of(plain[rid]), rid
        assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 2e-3, rid


def test_unsupported_architecture_is_one_clear_error(checkpoints, tmp_path):
    import json
    import shutil

    shutil.copytree(checkpoints["qwen3"].path, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["architectures"] = ["Gemma3ForCausalLM"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(EngineConfigError, match=r"'Gemma3ForCausalLM'\] is not supported; supported: .*Qwen3"):
        make_engine(tmp_path / "m")
