"""What a speculative verification step costs against a plain decode step, at batch 1. Prints JSON.

Speculation pays when the tokens a verification yields (1 + the accepted drafts) outrun the ratio of the two step
times. Acceptance depends on the model and the text; the cost does not, so this measures the cost, on any model
(default: the Llama-3-8B architecture with random weights, built on the device):

- `plain`: the engine without speculation, one request of --input-len random tokens decoding --output-len tokens;
- `rejected`: the engine with n-gram speculation, its proposer replaced by one that always offers
  --num-draft-tokens drafts that are all wrong (the true next token + 1), so every step verifies k drafts and
  yields one token: the time per token is the time per verification step.

Each variant runs in its own child process (a fresh GPU), medians of 3 requests after a warm-up. The break-even is
`rejected / plain`: the mean tokens per verification above which speculation is faster.

    python benchmarks/spec_cost_bench.py                            # on the GPU, about a minute
    python benchmarks/spec_cost_bench.py --tiny --device cpu        # a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # `trt_gateway` importable from a plain checkout

VARIANTS = ("plain", "rejected")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", choices=VARIANTS, help="run one variant in this process (the parent's child)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="a 2-layer toy model (smoke runs)")
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=256)
    p.add_argument("--num-draft-tokens", type=int, default=4)
    return p.parse_args(argv)


def run_variant(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from benchmarks.engine_profile import LLAMA3_8B, TINY
    from trt_gateway.engine import EngineConfig, LLMEngine
    from trt_gateway.engine.speculative.ngram import NgramProposer
    from trt_gateway.types import GenerateRequest, Prompt, SamplingParams, StoppingCriteria

    model = TINY if args.tiny else LLAMA3_8B
    folder = tempfile.mkdtemp()
    (Path(folder) / "config.json").write_text(json.dumps(model))
    cpu = args.device == "cpu"
    options: dict[str, Any] = dict(
        model=folder, device=args.device, dtype="float32" if cpu else "bfloat16", load_format="dummy",
        max_num_seqs=8, max_model_len=args.input_len + args.output_len + 64, enable_prefix_caching=False,
        gpu_memory_utilization=0.5,
    )  # fmt: skip
    if args.variant == "rejected":
        options.update(speculative_mode="ngram", ngram_min=1, num_draft_tokens=args.num_draft_tokens)
    engine = LLMEngine(EngineConfig(**options))
    vocab = int(model["vocab_size"])
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(vocab // 100, vocab - vocab // 100, (args.input_len,), generator=generator).tolist()

    def generate(tag: str, max_tokens: int) -> tuple[list[int], list[float]]:
        request = GenerateRequest(
            request_id=tag, model="bench", prompt=Prompt(), sampling=SamplingParams(temperature=0.0),
            stopping=StoppingCriteria(max_tokens=max_tokens, ignore_eos=True),
        )  # fmt: skip
        engine.add_request(request, prompt)
        tokens, stamps = [], []
        while engine.has_unfinished():
            for out in engine.step():
                if out.new_token_ids:
                    tokens += out.new_token_ids
                    stamps.append(time.perf_counter())
        return tokens, stamps

    truth: list[int] = []
    if args.variant == "rejected":
        # The continuation without drafts first, then drafts that each miss it by one id.
        NgramProposer.propose = lambda self, ids, k: []  # type: ignore[method-assign]
        truth, _ = generate("reference", args.output_len)
        offset = len(prompt)
        NgramProposer.propose = lambda self, ids, k: [  # type: ignore[method-assign]
            (t + 1) % vocab for t in truth[len(ids) - offset : len(ids) - offset + k]
        ]
    generate("warm-up", 8)
    per_token, steps = [], 0
    for r in range(3):
        tokens, stamps = generate(f"run-{r}", args.output_len)
        per_token.append((stamps[-1] - stamps[0]) / (len(tokens) - 1))
        steps = len(stamps)
    spec = engine.speculation.stats if engine.speculation is not None else None
    return {
        "variant": args.variant,
        "ms_per_token": round(1000 * statistics.median(per_token), 3),
        "steps_per_request": steps,
        "draft_tokens": spec.draft_tokens if spec else 0,
        "accepted_tokens": spec.accepted_tokens if spec else 0,
        "async_scheduling": engine.async_scheduling,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.variant:
        print(json.dumps(run_variant(args)), flush=True)
        return 0
    results = {}
    for variant in VARIANTS:
        cmd = [sys.executable, __file__, "--variant", variant, *(argv if argv is not None else sys.argv[1:])]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode:
            print(done.stderr[-3000:], file=sys.stderr)
            return done.returncode
        results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    plain, rejected = results["plain"]["ms_per_token"], results["rejected"]["ms_per_token"]
    report: dict[str, Any] = {
        "benchmark": "spec_cost_bench",
        "model": "tiny" if args.tiny else "llama-3-8b (random weights)",
        "device": args.device,
        "input_len": args.input_len,
        "output_len": args.output_len,
        "num_draft_tokens": args.num_draft_tokens,
        "variants": results,
        # a verification step's time in plain steps: the mean tokens per verification above which drafting pays
        "break_even_tokens_per_verification": round(rejected / plain, 3),
    }
    if args.device.startswith("cuda"):
        import torch

        report["gpu"] = torch.cuda.get_device_name()
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
