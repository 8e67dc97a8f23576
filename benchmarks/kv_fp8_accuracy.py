"""What an FP8 KV cache (`kv_cache_dtype="fp8"`) does to a real model's outputs, against the model's own dtype. JSON.

For each prompt (chat-formatted) the engine generates --new-tokens greedily with each cache; then both engines
score the SAME sequence (the prompt and the reference cache's output) in one prefill, so the logits compare
position for position without the two outputs drifting apart: relative error of the logits (Frobenius, over all
positions), the largest absolute difference, and how often the top token is the same. Greedy agreement of the free
runs is reported too (the share of positions before the first difference, and overall).

    python benchmarks/kv_fp8_accuracy.py                 # SmolLM2-135M-Instruct (the default model), CPU, ~1 min
    python benchmarks/kv_fp8_accuracy.py --model model.gguf --device cuda

Nothing here asserts anything; tests/engine/test_fp8_kv_cache.py holds the bounds that CI checks.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests", ROOT / "tests" / "golden"):
    if str(path) not in sys.path:
        sys.path.append(str(path))  # `trt_gateway` and the tests' real_models / engine_golden helpers importable

PROMPTS = [
    "What is the capital of France?",
    "Explain what a GPU is in one sentence.",
    "Write a short poem about the sea.",
    "List three uses of a paperclip.",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="", help="a GGUF file (default: the default model, SmolLM2-135M-Instruct)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--result-file", default="")
    return p.parse_args(argv)


def build(model: str, device: str, kv: str) -> Any:
    from trt_gateway.engine import EngineConfig, LLMEngine

    return LLMEngine(EngineConfig(model=model, device=device, kv_cache_dtype=kv, seed=0, enable_prefix_caching=False))


def generate(engine: Any, prompt: list[int], n: int) -> list[int]:
    from trt_gateway.types import GenerateRequest, Prompt, SamplingParams, StoppingCriteria

    request = GenerateRequest(
        request_id="r", model="m", prompt=Prompt(), sampling=SamplingParams(temperature=0.0),
        stopping=StoppingCriteria(max_tokens=n, ignore_eos=True),
    )  # fmt: skip
    engine.add_request(request, prompt)
    out: list[int] = []
    while engine.has_unfinished():
        for step in engine.step():
            out.extend(step.new_token_ids)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model = args.model
    if not model:
        from real_models import smollm2_gguf

        found = smollm2_gguf()
        if found is None:
            print("kv_fp8_accuracy: no default model cached; run `trt-gateway fetch-model` first", file=sys.stderr)
            return 2
        model = str(found)
    ref, fp8 = build(model, args.device, "auto"), build(model, args.device, "fp8")
    rows = []
    for text in PROMPTS:
        prompt = chat_ids(model, text)
        a, b = generate(ref, prompt, args.new_tokens), generate(fp8, prompt, args.new_tokens)
        first = next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(a))
        from engine_golden import engine_logits  # one prefill over the whole sequence, in blocks of its own

        seq = prompt + a
        la, lb = (engine_logits(e, seq, [len(seq)]).float() for e in (ref, fp8))
        rows.append({
            "prompt": text, "greedy_same_prefix": first, "greedy_agreement": sum(x == y for x, y in zip(a, b, strict=True)) / len(a),
            "logits_rel_error": float((lb - la).norm() / la.norm()), "logits_max_abs_diff": float((lb - la).abs().max()),
            "top1_agreement": float((lb.argmax(-1) == la.argmax(-1)).float().mean()), "positions": len(prompt + a),
        })  # fmt: skip
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    result = {
        "benchmark": "kv_fp8_accuracy", "model": Path(model).name, "device": args.device,
        "dtype": str(ref.dtype), "kv_cache": [str(ref.kv_dtype), str(fp8.kv_dtype)], "new_tokens": args.new_tokens,
        "prompts": rows,
        "worst_logits_rel_error": max(r["logits_rel_error"] for r in rows),
        "mean_top1_agreement": sum(r["top1_agreement"] for r in rows) / len(rows),
    }  # fmt: skip
    print(json.dumps(result, indent=1))
    if args.result_file:
        Path(args.result_file).write_text(json.dumps(result, indent=1))
    return 0


def chat_ids(model: str, text: str) -> list[int]:
    """The chat-formatted prompt's ids, as `real_model_bench.py` builds them (GGUF: template and tokenizer from the file)."""
    from trt_gateway.engine.gguf_tokenizer import gguf_chat_template, gguf_tokenizer

    rendered = gguf_chat_template(Path(model)).render([{"role": "user", "content": text}])
    return list(gguf_tokenizer(Path(model)).encode(rendered, add_special_tokens=False).ids)


if __name__ == "__main__":
    sys.exit(main())
