"""GGUF checkpoints, golden against HF transformers loading the same file (`from_pretrained(..., gguf_file=...)`).

Each case writes a GGUF with `gguf.GGUFWriter` (tests/gguf_files.py, llama.cpp's names and q/k permutation) from a
committed or tiny model, in one quantisation type, then checks on the CPU in float32:
- the engine's dequantised weights equal HF's exactly (both dequantise the same blocks, and undo the permutation);
- the chat prompt (template and tokenizer from the GGUF metadata) gives the same token ids as HF's tokenizer;
- greedy output is token-exact against HF `generate`, and the chosen tokens' logprobs agree within LOGITS_ATOL
  (same weights, same dtype: the only difference is kernel order).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_helpers import make_request, run_until_done, tokens_of

from trt_gateway.engine import EngineConfig, LLMEngine
from trt_gateway.engine.gguf_tokenizer import gguf_chat_template, gguf_tokenizer
from trt_gateway.executors.native import DEMO_MODEL

pytest.importorskip("gguf")
from gguf_files import write_gguf  # noqa: E402  (needs gguf)

LOGITS_ATOL = 1e-4  # fp32 on both sides over identical weights; seen: ~3e-6
MAX_TOKENS = 24
CHATS = [
    [{"role": "user", "content": "What does a for statement do?"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a Python list method."}],
    [{"role": "user", "content": "def fibonacci(n):"}],
]
DEMO_TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K"]


def _tiny_checkpoint(path: Path, family: str, **extra: Any) -> Path:
    """A random model in the demo model's vocabulary, with its tokenizer files, so templates and text work."""
    import transformers
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(DEMO_MODEL / "tokenizer.json")).get_vocab_size()
    config = getattr(transformers, f"{family}Config")(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, max_position_embeddings=256,
        bos_token_id=1, eos_token_id=2, rms_norm_eps=1e-6, **extra,
    )  # fmt: skip
    torch.manual_seed(0)
    model = getattr(transformers, f"{family}ForCausalLM")(config)
    model.save_pretrained(path)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(DEMO_MODEL / name, path / name)
    return path


CASES = [(f"demo-{q}", "demo", q) for q in DEMO_TYPES] + [
    ("llama-mha-untied-F16", "llama", "F16"),  # output.weight present, q and k permuted with the same head count
    ("qwen2-Q8_0", "qwen2", "Q8_0"),  # biases, and no permutation
]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {
        "demo": DEMO_MODEL,
        "llama": _tiny_checkpoint(tmp_path_factory.mktemp("llama-mha"), "Llama", num_attention_heads=4,
                                  num_key_value_heads=4, tie_word_embeddings=False),
        "qwen2": _tiny_checkpoint(tmp_path_factory.mktemp("qwen2"), "Qwen2", num_attention_heads=4,
                                  num_key_value_heads=2, tie_word_embeddings=True),
    }  # fmt: skip


@pytest.mark.parametrize(("case", "source", "qtype"), CASES, ids=[c[0] for c in CASES])
def test_gguf_matches_hf_loading_the_same_file(sources, tmp_path, case, source, qtype) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = write_gguf(sources[source], tmp_path / f"{case}.gguf", qtype)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=gguf_file.name, dtype=torch.float32).eval()
    hf_tok = AutoTokenizer.from_pretrained(tmp_path, gguf_file=gguf_file.name)
    engine = LLMEngine(EngineConfig(model=str(gguf_file), device="cpu", dtype="float32", max_num_seqs=4))

    ours = dict(engine.model_runner.model.named_parameters())
    for name, want in hf.state_dict().items():
        if name in ours:  # fused projections are compared through their parts' outputs below
            assert torch.equal(ours[name], want), f"{case}: {name} differs from HF's dequantised weight"

    tokenizer, template = gguf_tokenizer(gguf_file), gguf_chat_template(gguf_file)
    prompts = []
    for i, chat in enumerate(CHATS):
        text = template.render(chat)
        assert text == hf_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        assert ids == hf_tok(text, add_special_tokens=False).input_ids
        prompts.append(ids)
        engine.add_request(make_request(f"{case}-{i}", max_tokens=MAX_TOKENS, logprobs=True), ids)
    results = run_until_done(engine)

    worst = 0.0
    for i, ids in enumerate(prompts):
        with torch.inference_mode():
            out = hf.generate(torch.tensor([ids]), max_new_tokens=MAX_TOKENS, do_sample=False, output_logits=True,
                              return_dict_in_generate=True, pad_token_id=0)  # fmt: skip
        want = out.sequences[0, len(ids) :].tolist()
        got = tokens_of(results[f"{case}-{i}"])
        assert got == want, f"{case}, chat {i}: engine {got} != HF {want}"
        hf_logprobs = torch.log_softmax(torch.cat(out.logits).float(), dim=-1)
        engine_lp = [s.logprob for o in results[f"{case}-{i}"] for s in o.logprobs]
        worst = max(
            worst, *(abs(a - float(hf_logprobs[j, t])) for j, (a, t) in enumerate(zip(engine_lp, want, strict=True)))
        )
        assert tokenizer.decode(got) == hf_tok.decode(want, skip_special_tokens=True)
    print(f"{case}: worst |logprob(engine) - logprob(HF)| = {worst:.2e}")
    assert worst < LOGITS_ATOL
