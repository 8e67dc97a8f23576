"""The real SmolLM2-135M-Instruct (Q4_1 GGUF) against HF transformers loading the same file: greedy chat answers
token for token, on the CPU in float32. Skipped unless the file is on this machine (tests/real_models.py says where).

Tolerance: the chosen tokens' logprobs within LOGITS_ATOL. Both sides compute over identical dequantised weights in
float32; 30 layers of different kernel order (the engine's paged attention and fused projections) drift further
than the tiny models do.
"""

from __future__ import annotations

import pytest
import torch
from engine_helpers import make_request, run_until_done, tokens_of
from real_models import SMOLLM2_CHATS, smollm2_gguf

from trt_gateway.engine import EngineConfig, LLMEngine
from trt_gateway.engine.gguf_tokenizer import gguf_chat_template, gguf_tokenizer

GGUF = smollm2_gguf()
pytestmark = pytest.mark.skipif(GGUF is None, reason="SmolLM2 GGUF not on this machine (see tests/real_models.py)")
MAX_TOKENS = 32
LOGITS_ATOL = 1e-3  # seen: ~2e-5


def test_smollm2_greedy_chat_matches_hf() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert GGUF is not None
    hf = AutoModelForCausalLM.from_pretrained(GGUF.parent, gguf_file=GGUF.name, dtype=torch.float32).eval()
    hf_tok = AutoTokenizer.from_pretrained(GGUF.parent, gguf_file=GGUF.name)
    engine = LLMEngine(EngineConfig(model=str(GGUF), device="cpu", dtype="float32", max_model_len=1024))
    tokenizer, template = gguf_tokenizer(GGUF), gguf_chat_template(GGUF)
    prompts = []
    for i, chat in enumerate(SMOLLM2_CHATS):
        text = template.render(chat)
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        assert ids == hf_tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=False)
        prompts.append(ids)
        engine.add_request(make_request(f"chat-{i}", max_tokens=MAX_TOKENS, logprobs=True), ids)
    results = run_until_done(engine)
    worst = 0.0
    for i, ids in enumerate(prompts):
        with torch.inference_mode():
            out = hf.generate(torch.tensor([ids]), max_new_tokens=MAX_TOKENS, do_sample=False, output_logits=True,
                              return_dict_in_generate=True)  # fmt: skip
        want = out.sequences[0, len(ids) :].tolist()
        got = tokens_of(results[f"chat-{i}"])
        assert got == want, f"chat {i}: engine {tokenizer.decode(got)!r} != HF {tokenizer.decode(want)!r}"
        print(f"chat {i}: {tokenizer.decode(got)!r}")
        hf_logprobs = torch.log_softmax(torch.cat(out.logits).float(), dim=-1)
        engine_lp = [s.logprob for o in results[f"chat-{i}"] for s in o.logprobs]
        worst = max(
            worst, *(abs(a - float(hf_logprobs[j, t])) for j, (a, t) in enumerate(zip(engine_lp, want, strict=True)))
        )
    print(f"SmolLM2: worst |logprob(engine) - logprob(HF)| = {worst:.2e}")
    assert worst < LOGITS_ATOL
