"""Speculative decoding: output tokens/s with and without each mode, at batch 1 and under load, printed as JSON.

Every configuration runs in the same process and the same run, on the same prompts, against the baseline (no
speculation). The engine is driven directly (no gRPC: the gateway's cost is serve_bench's subject). Requests are
greedy with ignore_eos, so each produces exactly --max-tokens tokens and greedy speculation cannot change them:
the script checks that every mode produced the baseline's tokens and says so in the JSON.

Prompt kinds, the first three chosen so that prompt lookup (n-gram) should help, the last so that it should not:
  repetition   a list that repeats itself
  code_edit    a function, then the instruction to write it again with a change
  quote        a passage, then a summary that starts quoting it
  open         an open-ended prompt with nothing to copy

Batch 1: tokens/s per request (prefill included) and the mean accepted length (tokens per verification).
Load: --concurrency requests at once (more than `speculative_max_batch`), throughput in output tokens/s, with the
load-aware default and with drafting forced on at every batch size, to show what the threshold protects against.

    python benchmarks/spec_bench.py                                    # demo target + demo draft, CPU
    python benchmarks/spec_bench.py --device cuda --model DIR --draft-model DIR

Figures are medians over --repeats runs. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from trt_gateway.engine import EngineConfig, LLMEngine
from trt_gateway.executors.native import DEMO_MODEL
from trt_gateway.types import GenerateRequest, Prompt, SamplingParams, StoppingCriteria

DEMO_DRAFT = DEMO_MODEL.parent / "draft"

CODE = """def mean(values):
    total = 0
    for value in values:
        total += value
    return total / len(values)
"""
PROMPTS = {
    "repetition": "Shopping list: apples, bread, milk, eggs, butter, cheese. Shopping list: apples, bread, milk, eggs, "
    "butter, cheese. Shopping list: apples, bread,",
    "code_edit": f"{CODE}\nThe same function, with `values` renamed to `items`:\n\ndef mean(items):\n    total = 0\n",
    "quote": "The with statement is used to wrap the execution of a block with methods defined by a context manager. "
    "This allows common try, except, finally usage patterns to be encapsulated for convenient reuse.\n"
    "In short: the with statement is used to wrap the execution of a block",
    "open": "Once upon a time",
}


def build(model: Path, options: dict[str, Any]) -> LLMEngine:
    return LLMEngine(EngineConfig(model=str(model), **options))


def request(rid: str, max_tokens: int) -> GenerateRequest:
    return GenerateRequest(
        request_id=rid,
        model="bench",
        prompt=Prompt(),
        sampling=SamplingParams(temperature=0.0),
        stopping=StoppingCriteria(max_tokens=max_tokens, ignore_eos=True),
    )


def run(engine: LLMEngine, prompts: list[list[int]], max_tokens: int, tag: str) -> tuple[float, list[list[int]]]:
    """All prompts at once; -> (seconds, tokens of each request)."""
    tokens: dict[str, list[int]] = {}
    start = time.perf_counter()
    for i, ids in enumerate(prompts):
        engine.add_request(request(f"{tag}-{i}", max_tokens), ids)
        tokens[f"{tag}-{i}"] = []
    while engine.has_unfinished():
        for out in engine.step():
            tokens[out.request_id].extend(out.new_token_ids)
    return time.perf_counter() - start, [tokens[f"{tag}-{i}"] for i in range(len(prompts))]


def accepted_length(engine: LLMEngine, before: tuple[int, int]) -> float | None:
    if engine.speculation is None:
        return None
    s = engine.speculation.stats
    verifications, accepted = s.verifications - before[0], s.accepted_tokens - before[1]
    return round(1 + accepted / verifications, 3) if verifications else None


def counters(engine: LLMEngine) -> tuple[int, int]:
    s = engine.speculation.stats if engine.speculation is not None else None
    return (s.verifications, s.accepted_tokens) if s is not None else (0, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEMO_MODEL)
    parser.add_argument("--draft-model", type=Path, default=DEMO_DRAFT)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--num-draft-tokens", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16, help="requests at once for the load figure")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0: torch's default); 1 is steadier "
        "on a shared machine, where spinning OpenMP threads slow down 10-100x",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(args.model / "tokenizer.json"))
    encoded = {kind: tokenizer.encode(text).ids for kind, text in PROMPTS.items()}
    common = dict(device=args.device, dtype=args.dtype, max_num_seqs=max(16, args.concurrency))
    spec = dict(num_draft_tokens=args.num_draft_tokens)
    configs: dict[str, dict[str, Any]] = {
        "none": {},
        "ngram": dict(speculative_mode="ngram", **spec),
        "draft": dict(speculative_mode="draft", draft_model=str(args.draft_model), **spec),
    }
    engines = {name: build(args.model, {**common, **options}) for name, options in configs.items()}
    always = {  # drafting at every batch size: what the load-aware threshold avoids
        f"{name}_always": build(args.model, {**common, **configs[name], "speculative_max_batch": 1 << 20})
        for name in ("ngram", "draft")
    }
    for name, engine in {**engines, **always}.items():  # warm up: first-call allocations, lazy inits
        run(engine, [encoded["open"]], 8, f"warm-{name}")

    baseline: dict[str, list[int]] = {}
    batch1: dict[str, dict[str, Any]] = {}
    for kind, ids in encoded.items():
        row: dict[str, Any] = {}
        for name, engine in engines.items():
            times, lengths = [], []
            for r in range(args.repeats):
                before = counters(engine)
                seconds, (tokens,) = run(engine, [ids], args.max_tokens, f"{kind}-{name}-{r}")
                times.append(seconds)
                lengths.append(accepted_length(engine, before))
                if name == "none":
                    baseline[kind] = tokens
                elif tokens != baseline[kind]:
                    row.setdefault("mismatch", []).append(name)
            tps = args.max_tokens / statistics.median(times)
            row[name] = {"tok_s": round(tps, 1), "accepted_length": lengths[0]}
        for name in ("ngram", "draft"):
            row[name]["speedup"] = round(row[name]["tok_s"] / row["none"]["tok_s"], 3)
        batch1[kind] = row

    load: dict[str, Any] = {}
    prompts = [list(encoded.values())[i % len(encoded)] for i in range(args.concurrency)]
    for name, engine in {**engines, **always}.items():
        times = [run(engine, prompts, args.max_tokens, f"load-{name}-{r}")[0] for r in range(args.repeats)]
        load[name] = {"tok_s": round(args.concurrency * args.max_tokens / statistics.median(times), 1)}
    for name in load:
        load[name]["vs_none"] = round(load[name]["tok_s"] / load["none"]["tok_s"], 3)

    print(
        json.dumps(
            {
                "machine": platform.processor() or platform.machine(),
                "device": str(engines["none"].device),
                "dtype": str(engines["none"].dtype).removeprefix("torch."),
                "model": str(args.model),
                "draft_model": str(args.draft_model),
                "max_tokens": args.max_tokens,
                "torch_threads": torch.get_num_threads(),
                "num_draft_tokens": args.num_draft_tokens,
                "speculative_max_batch": EngineConfig(model="").speculative_max_batch,
                "repeats": args.repeats,
                "greedy_tokens_identical": not any("mismatch" in row for row in batch1.values()),
                "batch1": batch1,
                "load": {"concurrency": args.concurrency, **load},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
