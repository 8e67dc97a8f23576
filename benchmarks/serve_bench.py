"""Throughput, time to first token and inter-token latency against concurrency, printed as JSON.

Two paths run side by side in the same process and the same run, on the same executor instance:
  direct   the executor's `generate()` called in-process (the baseline: no gRPC, no protobuf, no client)
  gateway  the same requests through the real gRPC server on loopback and the AsyncGatewayClient
so the difference is the gateway's own cost. Every request is greedy with ignore_eos, so each one produces exactly
--max-tokens tokens whatever the model.

    python benchmarks/serve_bench.py --executor echo                # the gateway's overhead, no model in the way
    python benchmarks/serve_bench.py --executor native              # the embedded demo model
    python benchmarks/serve_bench.py --executor native --model DIR --option device=cuda

Figures are medians over requests (latencies) and over --repeats runs (throughput). Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from trt_gateway import AsyncGatewayClient
from trt_gateway.config import from_mapping
from trt_gateway.executors import registry
from trt_gateway.server.app import GatewayServer
from trt_gateway.types import GenerateRequest, Prompt, SamplingParams, StoppingCriteria

PROMPTS = [
    "The for statement is used to",
    "A dictionary maps keys to",
    "Exceptions are raised when",
    "The with statement wraps",
    "A generator function returns",
    "Strings are immutable sequences of",
    "The import system finds modules by",
    "A class definition creates",
]

# Times of one request: arrival, then one timestamp per token (several tokens may share one delta).
Timeline = tuple[float, list[float]]


async def _direct(executor: Any, i: int, prompt: str, max_tokens: int, model: str) -> Timeline:
    request = GenerateRequest(
        request_id=f"direct-{i}-{time.monotonic_ns()}",
        model=model,
        prompt=Prompt(text=prompt),
        sampling=SamplingParams(temperature=0.0),
        stopping=StoppingCriteria(max_tokens=max_tokens, ignore_eos=True),
    )
    start, stamps = time.perf_counter(), []
    async for delta in executor.generate(request):
        now = time.perf_counter()
        stamps.extend([now] * len(delta.token_ids))
    return start, stamps


async def _gateway(client: AsyncGatewayClient, i: int, prompt: str, max_tokens: int, model: str) -> Timeline:
    start, stamps = time.perf_counter(), []
    async with client.stream(prompt, model=model, temperature=0.0, max_tokens=max_tokens, ignore_eos=True) as stream:
        async for chunk in stream:
            now = time.perf_counter()
            stamps.extend([now] * len(chunk.token_ids))
    return start, stamps


async def _load(one: Callable[[int, str], Awaitable[Timeline]], concurrency: int, num_requests: int) -> dict[str, Any]:
    """Closed loop: `concurrency` workers each send requests back to back until `num_requests` are done."""
    counter = iter(range(num_requests))
    timelines: list[Timeline] = []

    async def worker() -> None:
        for i in counter:
            timelines.append(await one(i, PROMPTS[i % len(PROMPTS)]))

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - began
    tokens = sum(len(stamps) for _, stamps in timelines)
    ttft = [stamps[0] - start for start, stamps in timelines if stamps]
    itl = [b - a for _, stamps in timelines for a, b in zip(stamps, stamps[1:], strict=False)]
    return {
        "output_tok_per_s": tokens / wall,
        "ttft_ms_p50": 1e3 * statistics.median(ttft),
        "itl_ms_p50": 1e3 * statistics.median(itl) if itl else None,
        "requests": len(timelines),
    }


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("output_tok_per_s", "ttft_ms_p50", "itl_ms_p50")
    out = {k: round(statistics.median(r[k] for r in runs if r[k] is not None), 3) for k in keys}
    out["requests"] = runs[0]["requests"]
    out["repeats"] = len(runs)
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    options = dict(kv.split("=", 1) for kv in args.option)
    parsed = {k: json.loads(v) if v[:1].isdigit() or v in ("true", "false") else v for k, v in options.items()}
    config = from_mapping(
        {
            "server": {"host": "127.0.0.1", "port": 0, "http": False},
            "executor": {"name": args.executor, "model": args.model or "", "options": parsed},
            "admission": {"max_inflight": 1024, "max_queued": 4096},
        }
    )
    executor = registry.create(config.executor)
    server = GatewayServer(config, executor)
    await server.start()
    model = executor.models()[0].name
    results: list[dict[str, Any]] = []
    try:
        async with AsyncGatewayClient(f"127.0.0.1:{server.port}", max_retries=0) as client:
            await _gateway(client, 0, PROMPTS[0], 4, model)  # warm-up: channel, engine, caches
            for concurrency in args.concurrency:
                n = max(args.requests, concurrency)
                paths: dict[str, Callable[[int, str], Awaitable[Timeline]]] = {
                    "direct": lambda i, p: _direct(executor, i, p, args.max_tokens, model),
                    "gateway": lambda i, p: _gateway(client, i, p, args.max_tokens, model),
                }
                for path, one in paths.items():
                    runs = [await _load(one, concurrency, n) for _ in range(args.repeats)]
                    results.append({"path": path, "concurrency": concurrency, **_median_run(runs)})
    finally:
        await server.stop(1.0)
    return {
        "benchmark": "serve_bench",
        "executor": args.executor,
        "model": model,
        "max_tokens": args.max_tokens,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": _cpus()},
        "results": results,
    }


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executor", default="echo")
    parser.add_argument("--model", default="")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=32, help="requests per (path, concurrency) run")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
