"""The gateway's streaming overhead against the floor Python gRPC allows, printed as JSON.

Three paths, in one run on one machine, each request streaming --tokens tokens (echo executor, ignore_eos):
  gateway  the real gateway server (echo executor) in its own process, on loopback, called through AsyncGatewayClient
  raw      a minimal grpc.aio server in its own process: a servicer whose GenerateStream just yields --tokens
           GenerateStreamResponse chunks (request_id, text, one token id; finish reason and usage on the last), called
           by a plain generated stub. What any Python gRPC streaming service costs at the least.
  direct   the echo executor's `generate()` called in this process: no gRPC, no protobuf (the executor's own cost)

Both servers run in subprocesses so that CPU time is accounted honestly per process: server CPU is read from
/proc/<pid>/stat (every thread of the server process), client CPU is this process's `time.process_time()`; the two
are summed into "cpu_s_per_1k_tokens". Client and server then also sit on different cores, as they would in
production. The paths take turns within each repeat, so load from elsewhere on the machine hits them alike.

    python benchmarks/stream_bench.py                                   # concurrency 1, 64, 512; ~2-3 minutes
    python benchmarks/stream_bench.py --concurrency 64 --repeats 5
    python benchmarks/stream_bench.py --server-option stream_coalesce_tokens=1   # the gateway without coalescing
    python benchmarks/stream_bench.py --variant off:stream_coalesce_tokens=1 --variant uv:loop=uvloop   # A/B in one run
    python benchmarks/stream_bench.py --concurrency --rate 10 20        # open loop: Poisson arrivals, requests/s

Closed loop (--concurrency): that many clients send requests back to back, which saturates the server; open loop
(--rate): requests arrive on their own schedule, as from independent users, which shows latency below saturation.
Figures per run: tokens/s and requests/s over the run's wall time, p50 / p99 time to first token and request
latency over its requests, mean chunks per request; reported as the median over --repeats runs. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date
from typing import Any

import grpc

from trt_gateway import AsyncGatewayClient
from trt_gateway.executors.echo import EchoExecutor
from trt_gateway.types import GenerateRequest, Prompt, SamplingParams, StoppingCriteria
from trt_gateway.v1 import gateway_pb2 as pb
from trt_gateway.v1 import gateway_pb2_grpc as pb_grpc

PROMPT = "The for statement is used to iterate"
MODEL = "echo"
PATHS = ("gateway", "raw", "direct")  # plus "gateway:LABEL" for each --variant

# One request as the client saw it: start, first-token time (None if no token came), end, tokens, chunks.
Sample = tuple[float, float | None, float, int, int]


# -- the servers (run as subprocesses of this script) -------------------------------------------------------------


class RawServicer(pb_grpc.GatewayServicer):
    """The floor: the same message shape as the gateway's stream, and nothing else."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        script = PROMPT.encode()
        self.script = [(chr(b), b) for b in script]

    async def GenerateStream(  # noqa: N802 - the generated servicer's method name
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        rid, script, last = request.request_id or "raw", self.script, self.tokens - 1
        for i in range(self.tokens):
            text, token = script[i % len(script)]
            chunk = pb.GenerateStreamResponse(request_id=rid, text=text, token_ids=(token,))
            if i == last:
                chunk.finish_reason = pb.FINISH_REASON_LENGTH
                chunk.usage.completion_tokens = self.tokens
            yield chunk


async def _serve_raw(tokens: int) -> None:
    server = grpc.aio.server()
    pb_grpc.add_GatewayServicer_to_server(RawServicer(tokens), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await _announce_and_wait(port)
    await server.stop(0)


async def _serve_gateway(server_options: dict[str, Any]) -> None:
    from trt_gateway.config import from_mapping
    from trt_gateway.server.app import GatewayServer

    config = from_mapping(
        {
            "server": {"host": "127.0.0.1", "port": 0, "http": False, **server_options},
            "executor": {"name": "echo", "options": {"model_name": MODEL}},
            "admission": {"max_inflight": 4096, "max_queued": 4096},
        }
    )
    server = GatewayServer(config)
    port = await server.start()
    await _announce_and_wait(port)
    await server.stop(0)


async def _announce_and_wait(port: int) -> None:
    """Tell the parent the port, then run until it closes our stdin."""
    print(json.dumps({"port": port, "loop": type(asyncio.get_running_loop()).__module__}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def _run_server(args: argparse.Namespace) -> None:
    options = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.server_option)}
    main = _serve_raw(args.tokens) if args.serve == "raw" else _serve_gateway(options)
    _run(main, args.loop)


def _run(main: Awaitable[None], loop: str) -> Any:
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)  # type: ignore[arg-type]
    return asyncio.run(main)  # type: ignore[arg-type]


class ServerProcess:
    def __init__(self, kind: str, tokens: int, loop: str, options: list[str]) -> None:
        cmd = [sys.executable, os.path.abspath(__file__), "--serve", kind, "--tokens", str(tokens), "--loop", loop]
        for kv in options:
            cmd += ["--server-option", kv]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        hello = json.loads(self.proc.stdout.readline())
        self.port, self.loop = hello["port"], hello["loop"]

    def cpu_s(self) -> float:
        """User + system CPU seconds of the server process, every thread included (Linux /proc; 10 ms ticks)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()  # after "pid (comm)": state is [0], utime [11], stime [12]
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _variant(spec: str) -> tuple[str, str | None, list[str]]:
    """Parse "LABEL:KEY=JSON,KEY=JSON" into (label, loop or None, server options); the pseudo-option loop=uvloop|asyncio
    picks the server's event loop."""
    label, _, rest = spec.partition(":")
    loop, options = None, []
    for kv in filter(None, rest.split(",")):
        key, _, value = kv.partition("=")
        if key == "loop":
            loop = value
        else:
            options.append(kv)
    return label, loop, options


# -- the clients --------------------------------------------------------------------------------------------------


async def _gateway_one(client: AsyncGatewayClient, tokens: int) -> Sample:
    start, first, n, chunks = time.perf_counter(), None, 0, 0
    async with client.stream(PROMPT, model=MODEL, max_tokens=tokens, ignore_eos=True) as stream:
        async for chunk in stream:
            if first is None and chunk.token_ids:
                first = time.perf_counter()
            n += len(chunk.token_ids)
            chunks += 1
    return start, first, time.perf_counter(), n, chunks


async def _raw_one(stub: pb_grpc.GatewayStub, tokens: int) -> Sample:
    start, first, n, chunks = time.perf_counter(), None, 0, 0
    async for chunk in stub.GenerateStream(pb.GenerateRequest(text=PROMPT)):
        if first is None and chunk.token_ids:
            first = time.perf_counter()
        n += len(chunk.token_ids)
        chunks += 1
    return start, first, time.perf_counter(), n, chunks


async def _direct_one(executor: EchoExecutor, i: int, tokens: int) -> Sample:
    request = GenerateRequest(
        request_id=f"direct-{i}",
        model=MODEL,
        prompt=Prompt(text=PROMPT),
        sampling=SamplingParams(temperature=0.0),
        stopping=StoppingCriteria(max_tokens=tokens, ignore_eos=True),
    )
    start, first, n, chunks = time.perf_counter(), None, 0, 0
    async for delta in executor.generate(request):
        if first is None and delta.token_ids:
            first = time.perf_counter()
        n += len(delta.token_ids)
        chunks += 1
    return start, first, time.perf_counter(), n, chunks


async def _load(
    one: Callable[[int], Awaitable[Sample]], concurrency: int, num_requests: int
) -> tuple[float, list[Sample]]:
    """Closed loop: `concurrency` workers send requests back to back until `num_requests` are done."""
    counter = iter(range(num_requests))
    samples: list[Sample] = []

    async def worker() -> None:
        for i in counter:
            samples.append(await one(i))

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - began, samples


async def _open_load(
    one: Callable[[int], Awaitable[Sample]], rate: float, duration: float, seed: int
) -> tuple[float, list[Sample]]:
    """Open loop: requests arrive at `rate` per second (Poisson) for `duration` seconds, whether or not earlier ones
    have finished, as independent users would send them."""
    arrivals, tasks, rng = 0.0, [], random.Random(seed)
    began = time.perf_counter()
    while arrivals < duration:
        delay = began + arrivals - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(len(tasks))))
        arrivals += rng.expovariate(rate)
    samples = list(await asyncio.gather(*tasks))
    return time.perf_counter() - began, samples


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def _figures(wall: float, samples: list[Sample], client_cpu_s: float, server_cpu_s: float) -> dict[str, float]:
    tokens = sum(s[3] for s in samples)
    ttft = [s[1] - s[0] for s in samples if s[1] is not None]
    latency = [s[2] - s[0] for s in samples]
    return {
        "tokens_per_s": tokens / wall,
        "requests_per_s": len(samples) / wall,
        "ttft_ms_p50": 1e3 * _pct(ttft, 0.5),
        "ttft_ms_p99": 1e3 * _pct(ttft, 0.99),
        "latency_ms_p50": 1e3 * _pct(latency, 0.5),
        "latency_ms_p99": 1e3 * _pct(latency, 0.99),
        "cpu_s_per_1k_tokens": 1e3 * (client_cpu_s + server_cpu_s) / tokens,
        "server_cpu_s_per_1k_tokens": 1e3 * server_cpu_s / tokens,
        "client_cpu_s_per_1k_tokens": 1e3 * client_cpu_s / tokens,
        "cpu_utilisation": (client_cpu_s + server_cpu_s) / wall,
        "chunks_per_request": sum(s[4] for s in samples) / len(samples),
        "tokens_per_request": tokens / len(samples),
    }


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in runs), 4) for k in runs[0]}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    load_before = _loadavg()
    servers: dict[str, ServerProcess] = {}
    clients: dict[str, AsyncGatewayClient] = {}
    ones: dict[str, Callable[[int], Awaitable[Sample]]] = {}
    channel = None
    executor = EchoExecutor({"model_name": MODEL})
    await executor.start()
    gateways = [("gateway", args.server_loop, args.server_option)]
    gateways += [
        (f"gateway:{label}", loop or args.server_loop, args.server_option + opts)
        for label, loop, opts in map(_variant, args.variant)
    ]
    results: dict[str, dict[str, Any]] = {}
    try:
        for name, loop, opts in gateways:
            if name != "gateway" or "gateway" in args.paths:
                servers[name] = ServerProcess("gateway", args.tokens, loop, opts)
                client = clients[name] = AsyncGatewayClient(f"127.0.0.1:{servers[name].port}", max_retries=0)
                ones[name] = functools.partial(lambda c, i: _gateway_one(c, args.tokens), client)
        if "raw" in args.paths:
            servers["raw"] = ServerProcess("raw", args.tokens, args.server_loop, [])
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{servers['raw'].port}")
            stub = pb_grpc.GatewayStub(channel)
            ones["raw"] = lambda i: _raw_one(stub, args.tokens)
        if "direct" in args.paths:
            ones["direct"] = lambda i: _direct_one(executor, i, args.tokens)
        for one in ones.values():  # warm-up: channels, connections, caches
            await _load(one, 8, 16)
        loads: list[tuple[str, dict[str, Any], Callable[..., Awaitable[tuple[float, list[Sample]]]]]] = []
        for c in args.concurrency:
            n = max(args.requests, c) if c > 1 else args.requests_c1
            loads.append((str(c), {"requests_per_run": n}, functools.partial(_load, concurrency=c, num_requests=n)))
        for rate in args.rate:
            load = functools.partial(_open_load, rate=rate, duration=args.duration, seed=1)
            loads.append((f"rate={rate:g}", {"open_loop_seconds": args.duration}, load))
        for key, info, load in loads:
            runs: dict[str, list[dict[str, float]]] = {p: [] for p in ones}
            for _ in range(args.repeats):
                for path, one in ones.items():  # the paths take turns, so load from elsewhere hits them alike
                    server = servers.get(path)
                    cpu0, srv0 = time.process_time(), server.cpu_s() if server else 0.0
                    wall, samples = await load(one)
                    client_cpu = time.process_time() - cpu0
                    server_cpu = server.cpu_s() - srv0 if server else 0.0
                    runs[path].append(_figures(wall, samples, client_cpu, server_cpu))
            row: dict[str, Any] = {**info, **{p: _median(r) for p, r in runs.items()}}
            if "raw" in row:
                r = row["raw"]
                for path in (p for p in ones if p.startswith("gateway")):
                    g, suffix = row[path], path[len("gateway") :].replace(":", "_")
                    row[f"gateway{suffix}_over_raw_tokens_per_s"] = round(g["tokens_per_s"] / r["tokens_per_s"], 3)
                    row[f"gateway{suffix}_added_latency_ms_p50"] = round(g["latency_ms_p50"] - r["latency_ms_p50"], 3)
                    row[f"gateway{suffix}_added_ttft_ms_p50"] = round(g["ttft_ms_p50"] - r["ttft_ms_p50"], 3)
            results[key] = row
            print(json.dumps({"load": key, **row}), file=sys.stderr, flush=True)
    finally:
        for client in clients.values():
            await client.close()
        if channel is not None:
            await channel.close()
        for server in servers.values():
            server.stop()
    return {
        "benchmark": "stream_bench",
        "date": date.today().isoformat(),
        "tokens_per_request": args.tokens,
        "repeats": args.repeats,
        "server_options": args.server_option,
        "variants": args.variant,
        "server_loop": {name: s.loop for name, s in servers.items()},
        "client_loop": type(asyncio.get_running_loop()).__module__,
        "accounting": "servers in subprocesses; cpu = client process_time + server process user+system (psutil)",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
            "cpus": len(os.sched_getaffinity(0)),
            "loadavg_before": load_before,
            "loadavg_after": _loadavg(),
        },
        "results": results,  # by concurrency (closed loop), and "rate=R" (open loop)
    }


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return f.read().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 64, 512], help="closed-loop clients")
    parser.add_argument(
        "--paths",
        nargs="+",
        default=list(PATHS),
        choices=PATHS,
        help="which of the base paths to run (variants always run)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        nargs="*",
        default=[],
        help="also run open-loop: Poisson arrivals at these requests/s (off by default)",
    )
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of arrivals per open-loop run")
    parser.add_argument("--tokens", type=int, default=256, help="tokens streamed per request")
    parser.add_argument("--requests", type=int, default=128, help="requests per run (at least the concurrency)")
    parser.add_argument("--requests-c1", type=int, default=48, help="requests per run at concurrency 1")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--server-option",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="a gateway `server` config field, e.g. stream_coalesce_tokens=1",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL:KEY=JSON,...",
        help="one more gateway server, with these server options on top (loop=uvloop picks uvloop); "
        "e.g. nocoalesce:stream_coalesce_tokens=1",
    )
    parser.add_argument("--server-loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--client-loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--serve", choices=("gateway", "raw"), help=argparse.SUPPRESS)  # the server subprocesses
    parser.add_argument("--loop", default="asyncio", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _run_server(args)
        return
    print(json.dumps(_run(bench(args), args.client_loop), indent=2))


if __name__ == "__main__":
    main()
