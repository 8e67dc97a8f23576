"""A small guided request while others' huge grammar compiles are queued: its latency and status, printed as JSON.

The native engine (the demo model) behind a real gateway on loopback. `--huge` requests, each a fresh choice of
`--choices` random 20-letter strings (about 2 s of compile each on one core), are sent at once; once all of them
have reached the grammar backend, one small guided request (a fresh 4-way choice) follows. Reported: the small
request's latency and gRPC status, and when the huge ones finished (or failed) after the start.

    python benchmarks/compile_fairness_bench.py                      # 8 x 6,000 choices, the default budget
    python benchmarks/compile_fairness_bench.py --huge 2 --choices 500

Nothing here is asserted; wall-clock figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import string
import time
from typing import Any

import grpc

from trt_gateway.config import from_mapping
from trt_gateway.executors.native import NativeExecutor
from trt_gateway.testing import LiveGateway
from trt_gateway.v1 import gateway_pb2 as pb
from trt_gateway.v1 import gateway_pb2_grpc as pb_grpc


def words(n: int, rng: random.Random) -> list[str]:
    return ["".join(rng.choices(string.ascii_letters, k=20)) for _ in range(n)]


async def timed(call: Any, start: float) -> dict[str, Any]:
    try:
        out = await call
        return {"status": "OK", "done_s": round(time.perf_counter() - start, 3), "text": out.outputs[0].text[:24]}
    except grpc.aio.AioRpcError as err:
        return {"status": err.code().name, "done_s": round(time.perf_counter() - start, 3)}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random()
    options = {"guided_compile_timeout_s": args.timeout_s}
    executor = NativeExecutor.from_config(
        from_mapping({"executor": {"name": "native", "options": options}}).executor
    )
    limits = {"max_guided_choices": 100_000, "max_guided_chars": 10_000_000}
    with LiveGateway(executor, limits=limits) as address:  # the gateway on a loop of its own, as in production
        grammars = executor.front.engine.structured  # type: ignore[attr-defined]
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.GatewayStub(channel)

            def request(choices: list[str]) -> pb.GenerateRequest:
                return pb.GenerateRequest(text="Pick one:", stopping=pb.StoppingCriteria(max_tokens=32),
                                          guided=pb.GuidedDecoding(choice=choices))

            await stub.Generate(request(["warm", "up"]))  # the tokenizer info and compiler, built once
            base = grammars.submitted
            start = time.perf_counter()
            huge = [asyncio.ensure_future(timed(stub.Generate(request(words(args.choices, rng))), start))
                    for _ in range(args.huge)]
            for _ in range(6000):  # until every huge one has reached the grammar backend (a minute at most)
                if grammars.submitted - base >= args.huge:
                    break
                await asyncio.sleep(0.01)
            sent = time.perf_counter()
            small = await timed(stub.Generate(request(words(4, rng))), sent)
            small["sent_after_s"] = round(sent - start, 3)
            results = await asyncio.gather(*huge)
    return {
        "bench": "compile_fairness",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "huge": args.huge,
        "choices": args.choices,
        "guided_compile_timeout_s": args.timeout_s,
        "small": small,
        "huge_done_s": sorted(r["done_s"] for r in results),
        "huge_status": sorted({r["status"] for r in results}),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--huge", type=int, default=8)
    parser.add_argument("--choices", type=int, default=6000)
    parser.add_argument("--timeout-s", type=float, default=10.0)
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=1))
