"""FP8 weights against the unquantized model, on the tiny checkpoints: logits and greedy agreement, stated bounds.

What is compared: the whole sequence (a prompt plus 48 greedy tokens of the reference) runs through the FP8 engine
and the reference in one prefill, and at every generated position the logits and the argmax are compared
(teacher-forced: one early fork does not make every later token differ). 4 checkpoints x 3 prompts x 48 positions
= 576 positions.

Bounds (the maths' own error is in tests/unit/test_fp8_quantization.py). These random models (initializer_range
0.15, vocabulary 256) have flat next-token distributions full of near-ties, the worst case for greedy agreement: the
bf16 engine against HF float32 measures 1.5 % relative logits error, 0.12 max |diff| and 98-99 % agreement here, and
FP8, rounding weights 16x more coarsely, measures 11-15 %, 0.8-1.4 and 76-89 % (CPU emulation and dequantized
checkpoints, 2026-12-04), and the real FP8 engine on an H200 against the bf16 engine 13-16 %, 0.8-1.2 and 69-90 %
(the lowest, 69 %, on one 48-token sequence of decode steps). Stated bounds, with headroom over those:
- logits: relative error ||fp8 - ref|| / ||ref|| <= FP8_LOGITS_REL (0.2) over all compared positions of a model, and
  max |diff| <= FP8_LOGITS_ATOL (1.6; logits span about +-5);
- greedy agreement >= FP8_MIN_AGREEMENT (65 %) of the positions, and a token differs only where the reference's
  top-2 logits are within FP8_TIE_GAP (1.2).
Scales swapped between channels (a layout bug) measured 0.79 relative error and 25 % agreement: the bounds catch it.
They hold for three things: the FP8 maths emulated on the CPU (float32 arithmetic on FP8-rounded weights and
activations; runs in CI), the real FP8 engine on a Hopper GPU (`torch._scaled_mm` and the Triton GEMV, against the
bf16 engine), and an FP8 checkpoint loaded dequantized on the CPU (against the unquantized HF model).
"""

from __future__ import annotations

import pytest
import torch
from engine_golden import engine_logits, hf_greedy, hf_logits
from engine_helpers import (
    CPU_FP32,
    CUDA_BF16,
    FP8_LAYOUTS,
    NEEDS_CUDA,
    VARIANTS,
    dequantized_state,
    make_engine,
    prompts,
    write_fp8_checkpoint,
)

from trt_gateway.engine import llm_engine
from trt_gateway.engine.engine_config import EngineConfigError
from trt_gateway.engine.layers import linear as linear_module
from trt_gateway.engine.layers.linear import one_row_gemv
from trt_gateway.engine.quantization.fp8 import fp8_reference, fp8_unsupported_reason

FP8_LOGITS_REL = 0.2
FP8_LOGITS_ATOL = 1.6
FP8_MIN_AGREEMENT = 0.65
FP8_TIE_GAP = 1.2
NEW_TOKENS = 48

HOPPER = torch.cuda.is_available() and fp8_unsupported_reason(torch.device("cuda")) is None
NEEDS_HOPPER = (*NEEDS_CUDA, pytest.mark.skipif(not HOPPER, reason="FP8 needs a Hopper GPU"))


def sequences(ckpt, case):
    """(prompt + the reference's greedy tokens, prompt length) for the comparison's prompts."""
    out = []
    for prompt in prompts(3, [5, 12, 20], seed=7):
        tokens, _ = hf_greedy(ckpt, case, prompt, NEW_TOKENS)
        out.append((prompt + tokens, len(prompt)))
    return out


def compare(got_rows, want_rows, what):
    """got/want: lists of [n, V] logits at the generated positions. Checks the bounds; -> (agreement, rel, atol)."""
    got, want = torch.cat(got_rows).float(), torch.cat(want_rows).float()
    rel = float((got - want).norm() / want.norm())
    worst = float((got - want).abs().max())
    top2 = want.topk(2, dim=-1).values
    differ = got.argmax(-1) != want.argmax(-1)
    agreement = 1.0 - float(differ.float().mean())
    gaps = (top2[:, 0] - top2[:, 1])[differ]
    gap = float(gaps.max()) if len(gaps) else 0.0
    print(f"{what}: logits rel {rel:.4f}, max |diff| {worst:.3f}, greedy agreement {agreement:.4f} of {len(got)}, "
          f"largest top-2 gap at a differing token {gap:.3f}")
    assert rel <= FP8_LOGITS_REL, f"{what}: logits rel error {rel:.4f} > {FP8_LOGITS_REL}"
    assert worst <= FP8_LOGITS_ATOL, f"{what}: max |diff| {worst:.3f} > {FP8_LOGITS_ATOL}"
    assert agreement >= FP8_MIN_AGREEMENT, f"{what}: greedy agreement {agreement:.3f} < {FP8_MIN_AGREEMENT}"
    assert not len(gaps) or float(gaps.max()) <= FP8_TIE_GAP, f"{what}: a token differs at a top-2 gap {gaps.max()}"
    return agreement, rel, worst


def _emulated_fp8_linear(x, q, scale, bias, *, one_row, kernels):
    return fp8_reference(x, q, scale, bias).to(x.dtype)


@pytest.mark.parametrize("kind", list(VARIANTS))
def test_emulated_fp8_on_cpu_within_bounds(checkpoints, monkeypatch, kind):
    """The FP8 load path (quantize at load, fuse) with the maths emulated in float32: what the GPU computes, up to
    accumulation order. The engine then runs in bfloat16, as FP8 serving does; the reference is HF in float32."""
    ckpt = checkpoints[kind]
    monkeypatch.setattr(llm_engine, "resolve_fp8", lambda *args: True)
    monkeypatch.setattr(linear_module, "fp8_linear", _emulated_fp8_linear)
    engine = make_engine(ckpt.path, CPU_FP32, dtype="auto")
    assert engine.dtype == torch.bfloat16
    qkv = engine.model_runner.model.model.layers[0].self_attn.qkv
    assert qkv is not None and qkv.weight.dtype == torch.float8_e4m3fn
    got, want = [], []
    for seq, n in sequences(ckpt, CPU_FP32):
        got.append(engine_logits(engine, seq, [len(seq)])[n - 1 : -1])
        want.append(hf_logits(ckpt, CPU_FP32, seq)[n - 1 : -1])
    compare(got, want, f"{kind} emulated fp8 vs HF fp32")


@pytest.mark.parametrize("layout", FP8_LAYOUTS)
def test_fp8_checkpoint_dequantized_on_cpu(checkpoints, tmp_path, layout):
    """An FP8 checkpoint on the CPU loads with its weights multiplied out: the same logits as a float32 checkpoint
    of those products (to float32 rounding), and within the FP8 bounds of the original model."""
    from safetensors.torch import save_file

    ckpt = checkpoints["qwen2"]  # tied embeddings and q/k/v biases
    fp8_dir = write_fp8_checkpoint(ckpt, tmp_path / "fp8", layout)
    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    save_file(dequantized_state(fp8_dir), str(plain_dir / "model.safetensors"))
    (plain_dir / "config.json").write_text((ckpt.path / "config.json").read_text())
    fp8_engine = make_engine(fp8_dir, CPU_FP32)
    assert fp8_engine.model_config.fp8 is not None and not fp8_engine.fp8
    plain_engine = make_engine(plain_dir, CPU_FP32)
    got, want = [], []
    for seq, n in sequences(ckpt, CPU_FP32):
        logits = engine_logits(fp8_engine, seq, [len(seq)])
        torch.testing.assert_close(logits, engine_logits(plain_engine, seq, [len(seq)]), atol=1e-5, rtol=1e-5)
        got.append(logits[n - 1 : -1])
        want.append(hf_logits(ckpt, CPU_FP32, seq)[n - 1 : -1])
    compare(got, want, f"{layout} checkpoint (dequantized) vs HF")


def test_fp8_refused_on_cpu(llama):
    with pytest.raises(EngineConfigError) as err:
        make_engine(llama.path, CPU_FP32, quantization="fp8")
    assert err.value.field == "quantization" and "compute capability 9.0" in err.value.message
    with pytest.raises(EngineConfigError, match="quantization"):
        make_engine(llama.path, CPU_FP32, quantization="int8")


# -- on a Hopper GPU ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(VARIANTS))
@pytest.mark.gpu
@pytest.mark.skipif(not HOPPER, reason="FP8 needs a Hopper GPU (compute capability 9.0)")
def test_fp8_engine_against_bf16(checkpoints, kind):
    """Real FP8 (`_scaled_mm` for the prefill) against the bf16 engine on the same GPU; then greedy generation with
    CUDA graphs (batch-1 steps through the Triton FP8 GEMV) agrees with the bf16 engine's at the same rate."""
    ckpt = checkpoints[kind]
    fp8 = make_engine(ckpt.path, CUDA_BF16, quantization="fp8")
    bf16 = make_engine(ckpt.path, CUDA_BF16)
    # Graphs need the attention kernels; Gemma2's soft-capped attention runs in torch, so it decodes eagerly.
    assert fp8.fp8 and (fp8.model_runner.graphs is not None) == bf16.use_kernels
    got, want = [], []
    for seq, n in sequences(ckpt, CUDA_BF16):
        got.append(engine_logits(fp8, seq, [len(seq)])[n - 1 : -1])
        want.append(engine_logits(bf16, seq, [len(seq)])[n - 1 : -1])
    compare(got, want, f"{kind} fp8 vs bf16 (cuda prefill)")
    # The batch-1 decode path: one token at a time through the FP8 GEMV (what graph replays run; W8A16, so not the
    # prefill's numbers) against the bf16 prefill.
    got, want = [], []
    for seq, n in sequences(ckpt, CUDA_BF16):
        with one_row_gemv():
            got.append(engine_logits(fp8, seq, [n] + [1] * (len(seq) - n))[n - 1 : -1])
        want.append(engine_logits(bf16, seq, [len(seq)])[n - 1 : -1])
    compare(got, want, f"{kind} fp8 vs bf16 (cuda decode steps, fp8 gemv)")


@pytest.mark.parametrize("layout", FP8_LAYOUTS)
@pytest.mark.gpu
@pytest.mark.skipif(not HOPPER, reason="FP8 needs a Hopper GPU (compute capability 9.0)")
def test_fp8_checkpoint_served_in_fp8(checkpoints, tmp_path, layout):
    """An FP8 checkpoint on a Hopper GPU is served as stored (no flag needed), within the bounds of the bf16 model."""
    ckpt = checkpoints["llama3_gqa"]
    engine = make_engine(write_fp8_checkpoint(ckpt, tmp_path / "fp8", layout), CUDA_BF16)
    assert engine.fp8
    qkv = engine.model_runner.model.model.layers[0].self_attn.qkv
    assert qkv is not None and qkv.weight.dtype == torch.float8_e4m3fn and qkv.weight_scale is not None
    bf16 = make_engine(ckpt.path, CUDA_BF16)
    got, want = [], []
    for seq, n in sequences(ckpt, CUDA_BF16):
        got.append(engine_logits(engine, seq, [len(seq)])[n - 1 : -1])
        want.append(engine_logits(bf16, seq, [len(seq)])[n - 1 : -1])
    compare(got, want, f"{layout} checkpoint in fp8 vs bf16")
