"""Golden tests on the committed demo model (llm.c style): the engine against HF transformers, token for token.

The demo checkpoint is stored in bf16; both sides load it into float32 on the CPU, so the only differences are
kernel order: logits must agree within LOGITS_ATOL, and greedy output (with EOS honoured) must be identical.
"""

from __future__ import annotations

import pytest
import torch
from engine_helpers import make_request, run_until_done, tokens_of
from tokenizers import Tokenizer

from trt_gateway.engine import EngineConfig, LLMEngine
from trt_gateway.executors.native import DEMO_MODEL

LOGITS_ATOL = 1e-4  # fp32 on both sides; seen: 2.4e-6
PROMPTS = [
    "The for statement",
    "Return a list of",
    "A dictionary maps keys to values. The",
    "def fibonacci(n):\n    ",
]


@pytest.fixture(scope="module")
def hf():  # noqa: ANN201 - a transformers model
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(DEMO_MODEL, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def encoded() -> list[list[int]]:
    tok = Tokenizer.from_file(str(DEMO_MODEL / "tokenizer.json"))
    return [tok.encode(p).ids for p in PROMPTS]


@pytest.fixture(scope="module")
def engine() -> LLMEngine:
    return LLMEngine(EngineConfig(model=str(DEMO_MODEL), device="cpu", dtype="float32", max_num_seqs=4))


def test_demo_greedy_batch_matches_hf_generate(hf, encoded, engine) -> None:
    for i, ids in enumerate(encoded):
        engine.add_request(make_request(f"demo-{i}", max_tokens=32, logprobs=True), ids)
    results = run_until_done(engine)
    worst = 0.0
    for i, ids in enumerate(encoded):
        with torch.inference_mode():
            out = hf.generate(
                torch.tensor([ids]), max_new_tokens=32, do_sample=False, output_logits=True, return_dict_in_generate=True
            )
        want = out.sequences[0, len(ids) :].tolist()
        got = tokens_of(results[f"demo-{i}"])
        assert got == want, f"prompt {PROMPTS[i]!r}: engine {got} != HF {want}"
        # The engine's logprobs are the raw log-softmax: compare them with HF's for the chosen tokens.
        hf_logprobs = torch.log_softmax(torch.cat(out.logits).float(), dim=-1)
        engine_lp = [s.logprob for o in results[f"demo-{i}"] for s in o.logprobs]
        ref = [float(hf_logprobs[j, t]) for j, t in enumerate(want)]
        worst = max(worst, max(abs(a - b) for a, b in zip(engine_lp, ref, strict=True)))
    print(f"demo model: worst |logprob(engine) - logprob(HF)| = {worst:.2e}")
    assert worst < LOGITS_ATOL
    assert engine.num_free_blocks == engine.num_total_blocks
