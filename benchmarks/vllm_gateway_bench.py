"""The gateway's `vllm` executor against vLLM itself, in one run on one GPU, printed as JSON. Needs vLLM and a GPU.

Model: the Llama-3-8B architecture with random bf16 weights (`load_format="dummy"`, only a config.json is written;
no tokenizer: token-id prompts, `skip_tokenizer_init`). Two phases, each in its own child process so that every
engine gets the whole GPU and gives it back when the phase ends:

  offline  vLLM's own `LLM.generate` over --requests prompts of --input-len random tokens, --output-len tokens each
           (ignore_eos): its output tokens/s; then batch-1 decode latency, (t(N) - t(1)) / (N - 1) over requests of
           N = --itl-tokens and 1 tokens, which cancels prefill and scheduling.
  gateway  `trt-gateway` with the vllm executor (a child process, on loopback), the same engine settings; this
           process runs --concurrency streaming clients (grpc.aio, over --channels channels) of the same requests:
           output tokens/s, time to first token, chunks per request; then the batch-1 inter-token latency of one
           stream, (t_last - t_first) / (tokens - 1), the gateway's counterpart of the offline figure.

    python benchmarks/vllm_gateway_bench.py                           # both phases, 1,024 clients of 128/128
    python benchmarks/vllm_gateway_bench.py --phase offline           # one phase per command (a 10-minute limit)
    python benchmarks/vllm_gateway_bench.py --phase gateway --concurrency 256

Engine start-up (torch.compile, CUDA graphs) takes minutes per phase; point VLLM_CACHE_ROOT (and the Triton /
inductor caches) at a directory both phases share so that the second start reuses the first one's compilation.
Nothing here asserts anything; compare figures only between runs on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODEL_NAME = "llama-3-8b-dummy"
# Meta-Llama-3-8B's config.json (the architecture only; the weights are random).
LLAMA3_8B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
    "max_position_embeddings": 8192, "rope_theta": 500000.0, "rms_norm_eps": 1e-05, "hidden_act": "silu",
    "bos_token_id": 128000, "eos_token_id": 128001, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "attention_bias": False, "initializer_range": 0.02,
}
NO_VLLM = ("vllm_gateway_bench: vLLM is not installed here, so nothing was measured. Run this on a machine with an "
           "NVIDIA GPU after `pip install 'trt-gateway[vllm]'` (see docs/vllm.md).")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phase", choices=("all", "offline", "gateway", "serve"), default="all",
                   help="'serve' is internal: the gateway child process")
    p.add_argument("--requests", type=int, default=1024, help="requests per throughput run")
    p.add_argument("--concurrency", type=int, default=1024, help="streaming clients at once (gateway phase)")
    p.add_argument("--channels", type=int, default=8, help="gRPC channels the clients share")
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--itl-tokens", type=int, default=256, help="tokens of the batch-1 latency requests")
    p.add_argument("--itl-repeats", type=int, default=5, help="batch-1 measurements; the median is reported")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--max-num-seqs", type=int, default=1024)
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--quantization", default="", choices=("", "fp8"),
                   help="vLLM's quantization: 'fp8' quantizes the bf16 weights to FP8 at load (Hopper GPUs)")
    p.add_argument("--port", type=int, default=50071)
    p.add_argument("--model-dir", default="",
                   help="a directory with a Llama config.json, written there when missing (default: a temporary one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start-timeout-s", type=float, default=900.0, help="how long the gateway may take to serve")
    p.add_argument("--result-file", default="", help="also write the JSON result here (the phase children use it)")
    return p.parse_args(argv)


def model_dir(args: argparse.Namespace) -> str:
    """--model-dir (given the Llama-3-8B config.json when it has none, so that phases run as separate commands can
    share one directory and vLLM's compile cache), else a temporary directory."""
    path = Path(args.model_dir) if args.model_dir else Path(tempfile.mkdtemp(prefix="vllm-bench-")) / MODEL_NAME
    if not (path / "config.json").exists():
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(LLAMA3_8B))
    return str(path)


def prompts(args: argparse.Namespace, count: int) -> list[list[int]]:
    rng = random.Random(args.seed)
    return [[rng.randrange(1000, 120000) for _ in range(args.input_len)] for _ in range(count)]


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The same engine settings for vLLM alone and behind the gateway (the gateway's option names)."""
    return {"load_format": "dummy", "skip_tokenizer_init": True, "dtype": "bfloat16",
            "gpu_memory_utilization": args.gpu_memory_utilization, "max_num_seqs": args.max_num_seqs,
            "max_model_len": args.max_model_len, "seed": args.seed,
            **({"quantization": args.quantization} if args.quantization else {})}


# -- phase: vLLM offline ------------------------------------------------------------------------------------------


def run_offline(args: argparse.Namespace, model: str) -> dict[str, Any]:
    # Reached only from main(), i.e. under `if __name__ == "__main__":`: vLLM spawns its engine-core process, which
    # re-imports this file as __mp_main__; nothing at module level may build an engine.
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    opts = engine_options(args)
    llm = LLM(model=model, **opts)
    batch = [TokensPrompt(prompt_token_ids=ids) for ids in prompts(args, args.requests)]
    params = SamplingParams(max_tokens=args.output_len, ignore_eos=True, detokenize=False, temperature=0.0)
    llm.generate(batch[: min(8, len(batch))], params, use_tqdm=False)  # warm-up
    start = time.perf_counter()
    outs = llm.generate(batch, params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)

    def timed(n: int) -> float:
        one = SamplingParams(max_tokens=n, ignore_eos=True, detokenize=False, temperature=0.0)
        t0 = time.perf_counter()
        llm.generate(batch[:1], one, use_tqdm=False)
        return time.perf_counter() - t0

    n = args.itl_tokens
    itls = [(timed(n) - timed(1)) / (n - 1) for _ in range(args.itl_repeats)]
    return {"requests": len(batch), "output_tokens": tokens, "elapsed_s": elapsed, "output_tok_s": tokens / elapsed,
            "batch1_itl_ms": 1000 * statistics.median(itls), "batch1_decode_tok_s": 1 / statistics.median(itls)}


# -- phase: the gateway (server child + clients here) -------------------------------------------------------------


def gateway_config(args: argparse.Namespace, model: str) -> Any:
    """The serve child's GatewayConfig: what `trt-gateway serve --executor vllm --option ...` builds, as a mapping."""
    from trt_gateway.config import from_mapping

    max_tokens = max(args.output_len, args.itl_tokens)
    return from_mapping({
        "server": {"host": "127.0.0.1", "port": args.port, "stall_timeout_s": 0, "http": False},
        "executor": {"name": "vllm", "model": model, "served_name": MODEL_NAME, "options": engine_options(args)},
        "admission": {"max_inflight": max(args.concurrency, 1), "max_queued": max(args.requests, 1)},
        "limits": {"max_tokens": max_tokens, "default_max_tokens": max_tokens},
    })


def run_serve(args: argparse.Namespace, model: str) -> int:
    from trt_gateway.server.app import serve

    return asyncio.run(serve(gateway_config(args, model)))


async def wait_serving(target: str, timeout_s: float, child: subprocess.Popen[bytes]) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if child.poll() is not None:
                raise RuntimeError(f"the gateway exited with code {child.returncode} before serving")
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(1.0)
    raise TimeoutError(f"the gateway did not serve within {timeout_s:.0f}s")


async def stream_once(stub: Any, ids: list[int], max_tokens: int) -> tuple[float, float | None, list[float], int]:
    """(start, first-token time, chunk arrival times, tokens) of one streamed request."""
    from trt_gateway.v1 import gateway_pb2 as pb

    request = pb.GenerateRequest(token_ids=ids, stopping=pb.StoppingCriteria(max_tokens=max_tokens, ignore_eos=True),
                                 sampling=pb.SamplingParams(temperature=0.0))
    start, first, arrivals, tokens = time.perf_counter(), None, [], 0
    async for chunk in stub.GenerateStream(request):
        if chunk.token_ids:
            now = time.perf_counter()
            first = first if first is not None else now
            arrivals.append(now)
            tokens += len(chunk.token_ids)
    return start, first, arrivals, tokens


async def clients(args: argparse.Namespace, target: str) -> dict[str, Any]:
    import grpc

    from trt_gateway.v1 import gateway_pb2_grpc as pb_grpc

    options = [("grpc.max_receive_message_length", 64 << 20)]
    channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(max(args.channels, 1))]
    stubs = [pb_grpc.GatewayStub(c) for c in channels]
    try:
        batch = prompts(args, args.requests)
        await asyncio.gather(*(stream_once(stubs[i % len(stubs)], batch[i], args.output_len) for i in range(8)))
        gate = asyncio.Semaphore(args.concurrency)

        async def one(i: int) -> tuple[float, float | None, list[float], int]:
            async with gate:
                return await stream_once(stubs[i % len(stubs)], batch[i], args.output_len)

        t0 = time.perf_counter()
        samples = await asyncio.gather(*(one(i) for i in range(len(batch))))
        elapsed = time.perf_counter() - t0
        tokens = sum(s[3] for s in samples)
        ttfts = sorted(1000 * (s[1] - s[0]) for s in samples if s[1] is not None)
        itls = []
        for _ in range(args.itl_repeats):
            _, first, arrivals, n = await stream_once(stubs[0], batch[0], args.itl_tokens)
            itls.append((arrivals[-1] - first) / (n - 1) if first is not None and n > 1 else float("nan"))
    finally:
        for c in channels:
            await c.close()
    return {
        "requests": len(batch), "concurrency": args.concurrency, "output_tokens": tokens, "elapsed_s": elapsed,
        "output_tok_s": tokens / elapsed, "ttft_p50_ms": _pct(ttfts, 50), "ttft_p99_ms": _pct(ttfts, 99),
        "chunks_per_request": statistics.mean(len(s[2]) for s in samples),
        "batch1_itl_ms": 1000 * statistics.median(itls), "batch1_decode_tok_s": 1 / statistics.median(itls),
    }


def run_gateway(args: argparse.Namespace, model: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--phase", "serve", "--model-dir", model, *_passthrough(args)]
    child = subprocess.Popen(cmd, env=_child_env(), stdout=sys.stderr)  # vLLM logs to stdout; the JSON is ours
    try:
        target = f"127.0.0.1:{args.port}"
        asyncio.run(wait_serving(target, args.start_timeout_s, child))
        return asyncio.run(clients(args, target))
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()


# -- orchestration ------------------------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q / 100))] if values else float("nan")


def _passthrough(args: argparse.Namespace) -> list[str]:
    skip = {"phase", "model_dir", "result_file"}
    return [x for k, v in vars(args).items() if k not in skip for x in (f"--{k.replace('_', '-')}", str(v))]


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def run_phase_child(args: argparse.Namespace, phase: str, model: str) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        cmd = [sys.executable, __file__, "--phase", phase, "--model-dir", model, "--result-file", result.name,
               *_passthrough(args)]
        subprocess.run(cmd, env=_child_env(), stdout=sys.stderr, check=True)
        return dict(json.loads(Path(result.name).read_text())[phase])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if importlib.util.find_spec("vllm") is None:
        print(NO_VLLM, file=sys.stderr)
        return 2
    model = model_dir(args)
    if args.phase == "serve":
        return run_serve(args, model)
    if args.phase == "offline":
        result: dict[str, Any] = {"offline": run_offline(args, model)}
    elif args.phase == "gateway":
        result = {"gateway": run_gateway(args, model)}
    else:  # each phase in a fresh process: one engine on the GPU at a time
        result = {"offline": run_phase_child(args, "offline", model), "gateway": run_gateway(args, model)}
    import vllm

    summary: dict[str, Any] = {
        "benchmark": "vllm_gateway_bench", "model": "Llama-3-8B architecture, dummy bf16 weights",
        "quantization": args.quantization or "none",
        "vllm_version": getattr(vllm, "__version__", "?"), "input_len": args.input_len, "output_len": args.output_len,
        **result,
    }
    if "offline" in result and "gateway" in result:
        off, gw = result["offline"], result["gateway"]
        summary["gateway_vs_offline_throughput"] = gw["output_tok_s"] / off["output_tok_s"]
        summary["batch1_itl_overhead_ms"] = gw["batch1_itl_ms"] - off["batch1_itl_ms"]
    if args.result_file:
        Path(args.result_file).write_text(json.dumps(summary))
    print(json.dumps(summary))  # the last line of stdout (vLLM's own log lines may come before it)
    return 0


if __name__ == "__main__":
    sys.exit(main())
