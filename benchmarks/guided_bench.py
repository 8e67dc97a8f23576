"""The cost of guided decoding per generated token, against unguided decoding, printed as JSON.

Same engine, same prompt, same run. Each constraint is loose enough that the output runs to --max-tokens (so the
token counts match the unguided baseline):
  none     unguided, ignore_eos
  regex    [a-z ,.]{2000}: a character class automaton, the cheapest mask
  json     a JSON array of at least 2000 short strings (xgrammar's JSON-schema path, the usual structured output)
Reported per batch size: output tokens/s and the overhead per token (ms) against "none"; plus the grammar
compilation time, cold (first use of the schema) and cached.

    python benchmarks/guided_bench.py                 # the demo model on this machine's CPU
    python benchmarks/guided_bench.py --device cuda --model DIR

Medians over --repeats. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from trt_gateway.engine import EngineConfig, LLMEngine
from trt_gateway.executors.native import DEMO_MODEL
from trt_gateway.types import GenerateRequest, GuidedDecoding, Prompt, SamplingParams, StoppingCriteria

CONSTRAINTS = {
    "none": GuidedDecoding(),
    "regex": GuidedDecoding(regex="[a-z ,.]{2000}"),
    "json": GuidedDecoding(
        json_schema=json.dumps({"type": "array", "items": {"type": "string", "maxLength": 40}, "minItems": 2000})
    ),
}


def run(
    engine: LLMEngine, guided: GuidedDecoding, batch: int, max_tokens: int, tag: str, prompt: list[int]
) -> tuple[float, int]:
    for i in range(batch):
        request = GenerateRequest(
            request_id=f"{tag}-{i}",
            model="bench",
            prompt=Prompt(),
            sampling=SamplingParams(temperature=0.8, seed=i),
            stopping=StoppingCriteria(max_tokens=max_tokens, ignore_eos=True),
            guided=guided,
        )
        engine.add_request(request, prompt)
    tokens = 0
    start = time.perf_counter()
    while engine.has_unfinished():
        tokens += sum(len(out.new_token_ids) for out in engine.step())
    return time.perf_counter() - start, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEMO_MODEL)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
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

    prompt = Tokenizer.from_file(str(args.model / "tokenizer.json")).encode("Words: ").ids
    engine = LLMEngine(EngineConfig(model=str(args.model), device=args.device, max_num_seqs=max(args.batch)))

    # Compilation: a schema never seen, then the same schema again.
    fresh = GuidedDecoding(json_schema=json.dumps({"type": "object", "properties": {"k": {"type": "integer"}}}))
    engine.structured.compile(GuidedDecoding(regex="warm-up"))  # loads xgrammar and the vocabulary first
    t0 = time.perf_counter()
    engine.structured.compile(fresh)
    t1 = time.perf_counter()
    engine.structured.compile(dataclasses.replace(fresh))
    t2 = time.perf_counter()

    for guided in CONSTRAINTS.values():  # warm up every path
        run(engine, guided, 1, 8, "warm", prompt)
    results: dict[str, Any] = {}
    for batch in args.batch:
        row: dict[str, Any] = {}
        for name, guided in CONSTRAINTS.items():
            samples = [
                run(engine, guided, batch, args.max_tokens, f"{name}-{batch}-{r}", prompt) for r in range(args.repeats)
            ]
            seconds = statistics.median(s for s, _ in samples)
            tokens = samples[0][1]
            steps = tokens / batch  # every request runs to max_tokens: one token per request per step
            row[name] = {"tok_s": round(tokens / seconds, 1), "ms_per_step": round(1000 * seconds / steps, 3)}
        for name in ("regex", "json"):
            row[name]["overhead_ms_per_step"] = round(row[name]["ms_per_step"] - row["none"]["ms_per_step"], 3)
            row[name]["relative"] = round(row[name]["tok_s"] / row["none"]["tok_s"], 3)
        results[f"batch_{batch}"] = row

    print(
        json.dumps(
            {
                "machine": platform.processor() or platform.machine(),
                "device": str(engine.device),
                "model": str(args.model),
                "max_tokens": args.max_tokens,
                "torch_threads": torch.get_num_threads(),
                "repeats": args.repeats,
                "compile_ms": {"cold": round(1000 * (t1 - t0), 3), "cached": round(1000 * (t2 - t1), 3)},
                **results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
