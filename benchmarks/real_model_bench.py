"""CPU decode tokens/s of a real GGUF model (SmolLM2-135M-Instruct by default): the native engine, the gateway over
gRPC, and HF transformers `generate` on the same file, same run, printed as JSON. Nothing is asserted.

Every path runs the same chat prompt greedily for --new-tokens tokens (EOS ignored) at batch 1 and at each
--batch-sizes entry, in float32 on the CPU (the engine's default there). Decode tokens/s is measured the same way on
every path, from wall times only: batch x (N - 1) / (time for N tokens - time for 1 token), which takes the prefill
out. Each figure is the median of --repeats runs; within a repeat the paths take turns (the gateway serves on loopback
from a thread of this process), and the JSON records the machine's load average.

    python benchmarks/real_model_bench.py                          # the cached default model (tests/real_models.py)
    python benchmarks/real_model_bench.py --model x.gguf --new-tokens 16 --repeats 1 --batch-sizes 1 --no-grpc
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import torch

CHAT = [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="", help="a GGUF file (default: $TRT_GATEWAY_SMOLLM2_GGUF or the model cache)")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-sizes", default="1,8", help="comma-separated")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--no-grpc", action="store_true", help="skip the gateway path")
    p.add_argument("--no-hf", action="store_true", help="skip HF transformers")
    p.add_argument("--date", default=date.today().isoformat())
    p.add_argument("--result-file", default="", help="also write the JSON here")
    return p.parse_args(argv)


def default_model() -> Path | None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from real_models import smollm2_gguf

    return smollm2_gguf()


def prompt_ids(model: Path) -> list[int]:
    from trt_gateway.engine.gguf_tokenizer import gguf_chat_template, gguf_tokenizer

    text = gguf_chat_template(model).render(CHAT)
    return list(gguf_tokenizer(model).encode(text, add_special_tokens=False).ids)


def engine_run(engine: Any, ids: list[int], batch: int, n: int) -> float:
    """Wall seconds for `batch` requests of `n` tokens each, prefill included."""
    from trt_gateway.types import GenerateRequest, Prompt, SamplingParams, StoppingCriteria

    start = time.perf_counter()
    for i in range(batch):
        request = GenerateRequest(request_id=f"r{time.monotonic_ns()}-{i}", model="bench", prompt=Prompt(),
                                  sampling=SamplingParams(temperature=0.0),
                                  stopping=StoppingCriteria(max_tokens=n, ignore_eos=True))  # fmt: skip
        engine.add_request(request, ids)
    produced = 0
    while engine.has_unfinished():
        produced += sum(len(out.new_token_ids) for out in engine.step())
    assert produced == batch * n
    return time.perf_counter() - start


def hf_run(model: Any, ids: list[int], batch: int, n: int) -> float:
    inputs = torch.tensor([ids] * batch)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                             attention_mask=torch.ones_like(inputs), pad_token_id=0)  # fmt: skip
    assert out.shape[1] == len(ids) + n
    return time.perf_counter() - start


async def grpc_run(target: str, messages: list[dict[str, str]], batch: int, n: int) -> float:
    """Wall seconds for `batch` concurrent streams of `n` tokens each, timed at the client."""
    from trt_gateway import AsyncGatewayClient

    async def one(client: AsyncGatewayClient) -> int:
        count = 0
        async with client.stream(messages=messages, max_tokens=n, ignore_eos=True, temperature=0.0) as stream:
            async for chunk in stream:
                count += len(chunk.token_ids)
        return count

    start = time.perf_counter()
    async with AsyncGatewayClient(target) as client:
        counts = await asyncio.gather(*(one(client) for _ in range(batch)))
    assert sum(counts) == batch * n
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    model = Path(args.model) if args.model else default_model()
    if model is None or not model.is_file():
        sys.exit("no GGUF model: pass --model or fetch the default model (trt-gateway fetch-model)")
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    n, ids = args.new_tokens, prompt_ids(model)
    result: dict[str, Any] = {
        "benchmark": "real_model_bench", "date": args.date, "model": model.name,
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "loadavg_start": os.getloadavg(), "python": platform.python_version(), "torch": torch.__version__},
        "workload": {"prompt_tokens": len(ids), "new_tokens": n, "repeats": args.repeats, "batch_sizes": sizes,
                     "dtype": "float32", "device": "cpu", "greedy": True, "ignore_eos": True},
        "decode_tok_s": {},
    }  # fmt: skip

    from trt_gateway.engine import EngineConfig, LLMEngine

    t0 = time.perf_counter()
    engine = LLMEngine(EngineConfig(model=str(model), device="cpu", dtype="float32", max_model_len=1024,
                                    max_num_seqs=max(sizes)))  # fmt: skip
    result["engine_load_s"] = round(time.perf_counter() - t0, 2)
    paths: dict[str, Callable[[int, int], float]] = {"engine": lambda b, k: engine_run(engine, ids, b, k)}
    with contextlib.ExitStack() as stack:
        if not args.no_grpc:
            from trt_gateway.executors.native import NativeExecutor
            from trt_gateway.testing import LiveGateway

            executor = NativeExecutor(model, options={"device": "cpu", "dtype": "float32", "max_model_len": 1024,
                                                      "max_num_seqs": max(sizes)})  # fmt: skip
            target = stack.enter_context(LiveGateway(executor))
            paths["gateway_grpc"] = lambda b, k: asyncio.run(grpc_run(target, CHAT, b, k))
        if not args.no_hf:
            from transformers import AutoModelForCausalLM

            t0 = time.perf_counter()
            hf = AutoModelForCausalLM.from_pretrained(model.parent, gguf_file=model.name, dtype=torch.float32).eval()
            result["hf_load_s"] = round(time.perf_counter() - t0, 2)
            paths["hf_transformers"] = lambda b, k: hf_run(hf, ids, b, k)
        for run in paths.values():
            run(1, 2)  # warm-up
        # Paths take turns within each repeat, so load from elsewhere on the machine hits them alike.
        rates: dict[str, dict[int, list[float]]] = {path: {b: [] for b in sizes} for path in paths}
        for _ in range(args.repeats):
            for b in sizes:
                for path, run in paths.items():
                    rates[path][b].append(b * (n - 1) / (run(b, n) - run(b, 1)))
    figures = {path: {f"batch{b}": statistics.median(r) for b, r in rows.items()} for path, rows in rates.items()}

    result["decode_tok_s"] = {path: {k: round(v, 1) for k, v in rows.items()} for path, rows in figures.items()}
    if "hf_transformers" in figures:
        result["engine_vs_hf"] = {k: round(v / figures["hf_transformers"][k], 2) for k, v in figures["engine"].items()}
    result["machine"]["loadavg_end"] = os.getloadavg()
    text = json.dumps(result, indent=2)
    print(text)
    if args.result_file:
        Path(args.result_file).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
