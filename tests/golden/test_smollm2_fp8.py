"""FP8 on the real SmolLM2-135M-Instruct (Q4_1 GGUF) on the CPU: what FP8 weights and an FP8 KV cache cost a real
model, each against the same engine without it. Skipped unless the file is on this machine (tests/real_models.py).

Method: each chat's prompt plus NEW_TOKENS greedy tokens of the reference engine runs through both engines in one
prefill, and the logits are compared at every generated position (teacher-forced, so one early fork does not make
every later token differ): 3 chats x 128 = 384 positions, past the end of each answer (ignore_eos). "Agreement" is how often the top token is the same there.
- FP8 weights: the maths emulated in float32 on FP8-rounded weights and per-token FP8 activations (what the GPU
  computes, up to accumulation order; as in test_fp8_golden.py), the engine in bfloat16 as FP8 serving runs, against
  the bfloat16 engine. FP8_WEIGHTS_BOUNDS.
- FP8 KV cache: the float32 engine with `kv_cache_dtype="fp8"` against its float32 cache. FP8_KV_BOUNDS.
Measured values are printed and recorded in docs/engine.md#fp8.
"""

from __future__ import annotations

import pytest
import torch
from engine_golden import engine_logits
from engine_helpers import make_request, run_until_done, tokens_of
from real_models import SMOLLM2_CHATS, smollm2_gguf

from trt_gateway.engine import EngineConfig, LLMEngine, llm_engine
from trt_gateway.engine.layers import linear as linear_module
from trt_gateway.engine.quantization.fp8 import fp8_reference

GGUF = smollm2_gguf()
pytestmark = pytest.mark.skipif(GGUF is None, reason="SmolLM2 GGUF not on this machine (see tests/real_models.py)")
NEW_TOKENS = 128
# (largest relative logits error, smallest top-token agreement), with headroom over what was measured.
# Measured (2026-12-04, this project's CPU): FP8 weights 12.2 % and 93.5 %; FP8 KV cache 6.1 % and 96.1 %.
FP8_WEIGHTS_BOUNDS = (0.16, 0.88)
FP8_KV_BOUNDS = (0.09, 0.90)


def _engine(**options: object) -> LLMEngine:
    assert GGUF is not None
    return LLMEngine(EngineConfig(model=str(GGUF), device="cpu", max_model_len=512, enable_prefix_caching=False,
                                  **options))  # type: ignore[arg-type]  # fmt: skip


def _sequences(reference: LLMEngine) -> list[tuple[list[int], int]]:
    """(prompt + the reference's NEW_TOKENS greedy tokens, prompt length) per chat."""
    from trt_gateway.engine.gguf_tokenizer import gguf_chat_template, gguf_tokenizer

    assert GGUF is not None
    tokenizer, template = gguf_tokenizer(GGUF), gguf_chat_template(GGUF)
    out = []
    for i, chat in enumerate(SMOLLM2_CHATS):
        ids = list(tokenizer.encode(template.render(chat), add_special_tokens=False).ids)
        # Past the end of the turn too (ignore_eos): the answers alone are 20-30 tokens, too few positions.
        reference.add_request(make_request(f"chat-{i}", max_tokens=NEW_TOKENS, stopping={"ignore_eos": True}), ids)
        out.append((ids + tokens_of(run_until_done(reference)[f"chat-{i}"]), len(ids)))
    return out


def _compare(got: LLMEngine, want: LLMEngine, bounds: tuple[float, float], what: str) -> None:
    rows_got, rows_want = [], []
    for seq, n in _sequences(want):
        rows_got.append(engine_logits(got, seq, [len(seq)])[n - 1 : -1].float())
        rows_want.append(engine_logits(want, seq, [len(seq)])[n - 1 : -1].float())
    g, w = torch.cat(rows_got), torch.cat(rows_want)
    rel = float((g - w).norm() / w.norm())
    agreement = float((g.argmax(-1) == w.argmax(-1)).float().mean())
    print(f"SmolLM2, {what}: logits relative error {rel:.4f}, max |diff| {float((g - w).abs().max()):.3f}, "
          f"top-token agreement {agreement:.4f} over {len(g)} positions")
    assert rel <= bounds[0] and agreement >= bounds[1], (what, rel, agreement)


def test_fp8_weights_against_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    bf16 = _engine(dtype="bfloat16")
    monkeypatch.setattr(llm_engine, "resolve_fp8", lambda *args: True)
    monkeypatch.setattr(
        linear_module, "fp8_linear", lambda x, q, scale, bias, **_: fp8_reference(x, q, scale, bias).to(x.dtype)
    )
    fp8 = _engine(dtype="auto")
    assert fp8.dtype == torch.bfloat16
    qkv = fp8.model_runner.model.model.layers[0].self_attn.qkv
    assert qkv is not None and qkv.weight.dtype == torch.float8_e4m3fn
    _compare(fp8, bf16, FP8_WEIGHTS_BOUNDS, "FP8 weights (emulated) vs bf16")


def test_fp8_kv_cache_against_float32() -> None:
    _compare(_engine(kv_cache_dtype="fp8"), _engine(), FP8_KV_BOUNDS, "FP8 KV cache vs float32 cache")
