"""Decode throughput of the embedded engine with 0, 1 and 8 distinct LoRA adapters in one batch, side by side.

One engine (the demo model unless --model), `--batch` greedy requests decoding `--tokens` tokens each; the requests
use no adapter, all the same adapter, or 8 adapters round-robin (random rank-`--rank` adapters on all seven
projections, written to a temp dir). Only decode steps are timed (the prefill step is excluded); scenarios are
interleaved over `--repeats` rounds after a warm-up, and the median is reported. Prints one JSON object.

Usage: python benchmarks/lora_bench.py [--batch 8] [--tokens 64] [--rank 8] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from trt_gateway.engine import EngineConfig, LLMEngine
from trt_gateway.engine.lora.slots import target_linears
from trt_gateway.executors.native import DEMO_MODEL
from trt_gateway.types import GenerateRequest, Prompt, SamplingParams, StoppingCriteria

SCENARIOS = (0, 1, 8)  # distinct adapters in the batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEMO_MODEL))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    engine = LLMEngine(EngineConfig(
        model=args.model, device=args.device, dtype=args.dtype, max_num_seqs=args.batch, max_loras=max(SCENARIOS),
        max_lora_rank=args.rank, enable_prefix_caching=False, max_num_batched_tokens=max(2048, args.batch * 64),
    ))
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(max(SCENARIOS)):
            engine.lora.register(f"a{i}", str(write_random_adapter(engine, Path(tmp) / f"a{i}", args.rank, seed=i)))
        run(engine, args, 0)  # warm-up
        for k in SCENARIOS:
            run(engine, args, k)
        rates: dict[int, list[float]] = {k: [] for k in SCENARIOS}
        for _ in range(args.repeats):
            for k in SCENARIOS:
                rates[k].append(run(engine, args, k))
    median = {k: statistics.median(v) for k, v in rates.items()}
    print(json.dumps({
        "benchmark": "lora_decode_throughput",
        "model": Path(args.model).name,
        "device": str(engine.device),
        "dtype": str(engine.dtype).removeprefix("torch."),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "gpu": torch.cuda.get_device_name() if engine.device.type == "cuda" else None,
        "batch": args.batch,
        "decode_tokens_per_request": args.tokens,
        "rank": args.rank,
        "tokens_per_s": {f"{k}_adapters": round(v, 1) for k, v in median.items()},
        "relative_to_base": {f"{k}_adapters": round(v / median[0], 3) for k, v in median.items()},
        "runs_tokens_per_s": {f"{k}_adapters": [round(x, 1) for x in v] for k, v in rates.items()},
    }, indent=2))


def run(engine: LLMEngine, args: argparse.Namespace, num_adapters: int) -> float:
    """Decode tokens per second for one batch with `num_adapters` distinct adapters (0: base model only)."""
    g = torch.Generator().manual_seed(0)
    for i in range(args.batch):
        adapter = f"a{i % num_adapters}" if num_adapters else None
        prompt = torch.randint(10, engine.vocab_size, (args.prompt_len,), generator=g).tolist()
        request = GenerateRequest(
            request_id=f"r{i}", model="bench", prompt=Prompt(), adapter=adapter,
            sampling=SamplingParams(temperature=0.0),
            stopping=StoppingCriteria(max_tokens=args.tokens, ignore_eos=True),
        )
        engine.add_request(request, prompt)
    engine.step()  # the prefill step (and the first token), not timed
    tokens, start = 0, time.perf_counter()
    while engine.has_unfinished():
        tokens += sum(len(out.new_token_ids) for out in engine.step())
    return tokens / (time.perf_counter() - start)


def write_random_adapter(engine: LLMEngine, path: Path, rank: int, seed: int) -> Path:
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, layer in target_linears(engine.model_runner.model).items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = torch.randn(rank, layer.in_features, generator=g) * 0.01
        tensors[f"base_model.model.{name}.lora_B.weight"] = torch.randn(layer.out_features, rank, generator=g) * 0.01
    path.mkdir(parents=True)
    save_file(tensors, str(path / "adapter_model.safetensors"))
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    (path / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": targets}))
    return path


if __name__ == "__main__":
    main()
