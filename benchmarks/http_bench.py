"""Streamed tokens/s through the OpenAI HTTP API against gRPC, same gateway process, same run, printed as JSON.

One gateway (echo executor: instant scripted tokens, so only the gateway and the wire are measured) runs in a child
process with both ports open. This process streams the same requests through each path in turn:
  grpc  AsyncGatewayClient.stream (the gateway's own client)
  http  POST /v1/completions with "stream": true over httpx, reading the server-sent events
Per run: output tokens/s over the run's wall time, p50 time to first token, and CPU seconds per 1,000 tokens of the
server (/proc/<pid>/stat, every thread) plus this client. Median over --repeats runs; the paths alternate within each
repeat, so load from elsewhere on the machine hits both alike. Nothing is asserted.

    python benchmarks/http_bench.py                      # concurrency 1 and 32, 256 tokens, 3 repeats
    python benchmarks/http_bench.py --concurrency 64 --tokens 128 --requests 256
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from typing import Any

import httpx

from trt_gateway import AsyncGatewayClient

PROMPT = "The for statement is used to iterate"


def _serve() -> None:
    """The child: a gateway with the echo executor on free gRPC and HTTP ports, announced on stdout."""
    from trt_gateway.config import from_mapping
    from trt_gateway.server.app import GatewayServer

    async def main() -> None:
        config = from_mapping({"server": {"host": "127.0.0.1", "port": 0, "http_port": 0, "stall_timeout_s": 0},
                               "executor": {"name": "echo"}, "admission": {"max_inflight": 4096, "max_queued": 65536}})
        server = GatewayServer(config)
        await server.start()
        print(json.dumps({"grpc": server.port, "http": server.http_port}), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def _server_cpu_s(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def _grpc_one(client: AsyncGatewayClient, tokens: int) -> tuple[float, int]:
    start, first, n = time.perf_counter(), None, 0
    async with client.stream(PROMPT, max_tokens=tokens, ignore_eos=True) as stream:
        async for chunk in stream:
            n += len(chunk.token_ids)
            if first is None and chunk.token_ids:
                first = time.perf_counter() - start
    return first or 0.0, n


async def _http_one(http: httpx.AsyncClient, tokens: int) -> tuple[float, int]:
    body = {"model": "echo", "prompt": PROMPT, "max_tokens": tokens, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    start, first, n = time.perf_counter(), None, 0
    async with http.stream("POST", "/v1/completions", json=body) as r:
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if first is None and event["choices"] and event["choices"][0]["text"]:
                first = time.perf_counter() - start
            if event.get("usage"):
                n = event["usage"]["completion_tokens"]
    return first or 0.0, n


async def _run(one: Any, concurrency: int, requests: int, pid: int) -> dict[str, float]:
    todo = iter(range(requests))
    results: list[tuple[float, int]] = []

    async def worker() -> None:
        for _ in todo:
            results.append(await one())

    cpu0, server0, t0 = time.process_time(), _server_cpu_s(pid), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0 + _server_cpu_s(pid) - server0
    tokens = sum(n for _, n in results)
    return {"tokens_per_s": tokens / wall, "ttft_p50_ms": statistics.median(f for f, _ in results) * 1e3,
            "cpu_s_per_1k_tokens": cpu / tokens * 1e3, "tokens": tokens}


async def bench(args: argparse.Namespace, child: subprocess.Popen[str], ports: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with AsyncGatewayClient(f"127.0.0.1:{ports['grpc']}") as client, httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{ports['http']}", limits=limits, timeout=60
    ) as http:
        paths = {"grpc": lambda: _grpc_one(client, args.tokens), "http": lambda: _http_one(http, args.tokens)}
        for one in paths.values():  # warm-up: connections, first-call costs
            await asyncio.gather(*(one() for _ in range(4)))
        for c in args.concurrency:
            requests = max(args.requests, c)
            runs: dict[str, list[dict[str, float]]] = {p: [] for p in paths}
            for _ in range(args.repeats):
                for name, one in paths.items():
                    runs[name].append(await _run(one, c, requests, child.pid))
            out[f"concurrency_{c}"] = {
                name: {k: round(statistics.median(r[k] for r in rs), 3) for k in rs[0]} for name, rs in runs.items()
            }
            row = out[f"concurrency_{c}"]
            row["http_over_grpc_tokens_per_s"] = round(row["http"]["tokens_per_s"] / row["grpc"]["tokens_per_s"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--tokens", type=int, default=256, help="tokens streamed per request")
    parser.add_argument("--requests", type=int, default=64, help="requests per run (at least the concurrency)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve()
        return
    child = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        results = asyncio.run(bench(args, child, json.loads(child.stdout.readline())))
    finally:
        child.kill()
        child.wait()
    print(json.dumps({
        "benchmark": "http_bench", "date": date.today().isoformat(), "machine": platform.node(),
        "cpus": os.cpu_count(), "python": platform.python_version(), "tokens": args.tokens,
        "repeats": args.repeats, "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
