"""The engine's one-row GEMV (`engine/kernels/gemv.py`) against cuBLAS (`F.linear`) on real projection shapes. JSON.

Each shape is timed as a CUDA graph of calls over enough distinct copies of the weight (up to 32, like 32 layers)
that none is served from L2; the median of the replays, per call. --sweep also times every configuration of a grid
(rows per program, columns per tile, warps, stages), which is how the kernel's fixed configuration was chosen.

    python benchmarks/gemv_bench.py            # on a CUDA machine, about 10 s
    python benchmarks/gemv_bench.py --sweep    # a few minutes
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # `trt_gateway` importable from a plain checkout

SHAPES = {  # name: (N, K) of W [N, K]
    "llama3-8b/qkv": (6144, 4096),
    "llama3-8b/o": (4096, 4096),
    "llama3-8b/gate_up": (28672, 4096),
    "llama3-8b/down": (4096, 14336),
    "llama3-8b/lm_head": (128256, 4096),
    "qwen2-7b/qkv": (4608, 3584),
    "qwen2-7b/o": (3584, 3584),
    "qwen2-7b/gate_up": (37888, 3584),
    "qwen2-7b/down": (3584, 18944),
}


def graph_ms(fn: Callable[[], object], replays: int = 20) -> float:
    """Median milliseconds of one replay of a CUDA graph that calls fn once (its kernels with PDL, as the engine's
    graphs: kernels/pdl.py)."""
    from trt_gateway.engine.kernels import pdl

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), pdl.for_graphs():
        fn()  # warm-up (Triton compiles here, outside the capture)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), pdl.for_graphs():
        fn()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", action="store_true", help="also time a grid of kernel configurations per shape")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gemv_bench needs a CUDA GPU")
    import triton

    from trt_gateway.engine.kernels import gemv as kernel

    dtype = getattr(torch, args.dtype)
    results: dict[str, dict] = {}
    for name, (n, k) in SHAPES.items():
        copies = max(1, min(32, int(2e9 // (n * k * 2))))
        weights = [torch.randn(n, k, device="cuda", dtype=dtype) for _ in range(copies)]
        x = torch.randn(1, k, device="cuda", dtype=dtype)
        gigabytes = n * k * x.element_size() / 1e9
        cublas = graph_ms(lambda: [F.linear(x, w) for w in weights]) / copies  # noqa: B023 (called right here)
        ours = graph_ms(lambda: [kernel.gemv(x, w) for w in weights]) / copies  # noqa: B023
        row: dict = {
            "cublas_us": round(1000 * cublas, 2),
            "gemv_us": round(1000 * ours, 2),
            "cublas_TB_s": round(gigabytes / cublas, 3),
            "gemv_TB_s": round(gigabytes / ours, 3),
            "speedup": round(cublas / ours, 3),
            "config (rows,cols,warps,stages)": ",".join(map(str, kernel.config_for(n, k))),
        }
        if args.sweep:
            grid = {}
            for bn, bk, warps, stages in itertools.product((4, 8, 16, 32), (256, 512, 1024), (4, 8), (2, 3, 4)):

                def call(bn=bn, bk=bk, warps=warps, stages=stages, weights=weights, x=x) -> None:
                    for w in weights:
                        kernel.gemv(x, w, config=(bn, bk, warps, stages))

                grid[f"{bn},{bk},{warps},{stages}"] = round(1000 * graph_ms(call, replays=10) / copies, 2)
            row["sweep_us (rows,cols,warps,stages)"] = grid
        results[name] = row
        print(name, {key: v for key, v in row.items() if not key.startswith("sweep")}, file=sys.stderr, flush=True)
        weights.clear()  # free this shape's copies before the next
        torch.cuda.empty_cache()
    print(
        json.dumps(
            {
                "benchmark": "gemv_bench",
                "gpu": torch.cuda.get_device_name(),
                "torch": torch.__version__,
                "triton": triton.__version__,
                "dtype": args.dtype,
                "method": "median CUDA-graph replay over up to 32 weight copies (not L2-resident), per call",
                "shapes": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
