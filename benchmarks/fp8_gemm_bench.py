"""FP8 projections against bf16 on the Llama-3-8B shapes, on a Hopper GPU. JSON.

One row (batch-1 decode): cuBLAS bf16 (`F.linear`), the engine's bf16 Triton GEMV, FP8 through `torch._scaled_mm`
(with the per-token quantization of the row it needs) and the FP8 Triton GEMV (`kernels/fp8_gemv.py`), each
configuration of a small grid. Several rows: bf16 `F.linear` against FP8 quantize + `_scaled_mm`, M = 16 .. 8192.
Each case is a CUDA graph of calls over enough distinct weight copies (up to 32) that none is served from L2; the
median replay, per call, and the bandwidth the weight bytes alone would need at that time.

    python benchmarks/fp8_gemm_bench.py --result-file $OUT/fp8_gemm.json      # about a minute on an H200
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # `trt_gateway` importable from a plain checkout

from benchmarks.gemv_bench import graph_ms  # noqa: E402

SHAPES = {  # name: (N, K) of W [N, K]
    "llama3-8b/qkv": (6144, 4096),
    "llama3-8b/o": (4096, 4096),
    "llama3-8b/gate_up": (28672, 4096),
    "llama3-8b/down": (4096, 14336),
}
GEMV_CONFIGS = [(4, 512, 4, 3), (8, 512, 4, 3), (4, 1024, 4, 3), (8, 1024, 8, 3), (2, 1024, 4, 4), (16, 256, 4, 3),
                (8, 2048, 8, 2), (16, 256, 4, 4), (32, 256, 8, 3), (16, 512, 8, 3), (8, 1024, 4, 3), (32, 128, 4, 3),
                (16, 1024, 8, 3)]  # fmt: skip
BF16_GEMV_CONFIGS = [(4, 512, 4, 3), (8, 512, 4, 3), (4, 1024, 4, 3), (8, 256, 4, 3), (2, 1024, 4, 3), (8, 512, 8, 3),
                     (16, 256, 4, 3), (4, 256, 4, 3), (16, 512, 8, 3), (2, 2048, 8, 3)]  # fmt: skip
ROWS = (16, 64, 256, 512, 1024, 8192)


def copies_for(nbytes: int) -> int:
    return max(1, min(32, (400 << 20) // max(nbytes, 1)))  # > 4x the 60 MB L2


def per_call_us(fn: Callable[[int], object], copies: int) -> float:
    """Median microseconds of one call fn(i), from a graph calling it once for each of `copies` weight copies."""
    return graph_ms(lambda: [fn(i) for i in range(copies)]) / copies * 1000


def bench_shape(n: int, k: int, sweep: bool, rows_to_time: tuple[int, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """-> (one-row timings, timings by row count) of W [n, k]."""
    from trt_gateway.engine.kernels import pdl
    from trt_gateway.engine.kernels.fp8_gemv import fp8_gemv
    from trt_gateway.engine.kernels.gemv import gemv
    from trt_gateway.engine.quantization.fp8 import fp8_linear, quantize_per_channel

    c = copies_for(n * k * 2)
    ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(c)]
    qs = [quantize_per_channel(w) for w in ws]
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    row: dict[str, Any] = {
        "cublas_bf16_us": per_call_us(lambda i: F.linear(x, ws[i]), c),
        "triton_bf16_gemv_us": per_call_us(lambda i: gemv(x, ws[i]), c),
        "scaled_mm_fp8_us": per_call_us(lambda i: fp8_linear(x, *qs[i], None, one_row=False, kernels=True), c),
        "triton_fp8_gemv_us": per_call_us(lambda i: fp8_gemv(x, *qs[i]), c),
    }
    if pdl.ENABLED:  # the same calls without programmatic dependent launch (kernels/pdl.py)
        pdl.ENABLED = False
        try:
            row["triton_bf16_gemv_no_pdl_us"] = per_call_us(lambda i: gemv(x, ws[i]), c)
            row["triton_fp8_gemv_no_pdl_us"] = per_call_us(lambda i: fp8_gemv(x, *qs[i]), c)
        finally:
            pdl.ENABLED = True
    if sweep:
        row["fp8_gemv_sweep_us"] = {
            "x".join(map(str, cfg)): round(per_call_us(lambda i, cfg=cfg: fp8_gemv(x, *qs[i], config=cfg), c), 2)
            for cfg in GEMV_CONFIGS
        }
        row["bf16_gemv_sweep_us"] = {
            "x".join(map(str, cfg)): round(per_call_us(lambda i, cfg=cfg: gemv(x, ws[i], config=cfg), c), 2)
            for cfg in BF16_GEMV_CONFIGS
        }
    row["fp8_gemv_tb_s"] = n * k / (row["triton_fp8_gemv_us"] * 1e-6) / 1e12
    row["bf16_gemv_tb_s"] = 2 * n * k / (row["triton_bf16_gemv_us"] * 1e-6) / 1e12
    rows: dict[str, Any] = {}
    cm = min(c, 8)
    for m in rows_to_time:
        xm = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        bf = per_call_us(lambda i, xm=xm: F.linear(xm, ws[i]), cm)
        f8 = per_call_us(lambda i, xm=xm: fp8_linear(xm, *qs[i], None, one_row=False, kernels=True), cm)
        tflops = 2 * m * n * k / 1e12
        rows[f"M={m}"] = {
            "bf16_us": round(bf, 2), "fp8_us": round(f8, 2), "speedup": round(bf / f8, 3),
            "bf16_tflop_s": round(tflops / (bf * 1e-6), 1), "fp8_tflop_s": round(tflops / (f8 * 1e-6), 1),
        }  # fmt: skip
    return {key: (round(v, 3) if isinstance(v, float) else v) for key, v in row.items()}, rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--result-file", default="")
    p.add_argument("--no-sweep", action="store_true", help="time only the GEMV's fixed configuration")
    p.add_argument("--rows", default=",".join(map(str, ROWS)), help="row counts of the several-rows table ('': none)")
    args = p.parse_args()
    from trt_gateway.engine.kernels.fp8_gemv import config_for

    torch.manual_seed(0)
    out: dict[str, Any] = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "one_row": {}, "rows": {}}
    out["fp8_gemv_configs"] = {name: "x".join(map(str, config_for(n, k))) for name, (n, k) in SHAPES.items()}
    for name, (n, k) in SHAPES.items():
        one_row, rows = bench_shape(n, k, not args.no_sweep, tuple(int(r) for r in args.rows.split(",") if r))
        out["one_row"][name] = one_row
        print(name, json.dumps(one_row), flush=True)
        for key, value in rows.items():
            out["rows"][f"{name}/{key}"] = value
            print(f"{name}/{key}", value, flush=True)
        torch.cuda.empty_cache()
    if args.result_file:
        Path(args.result_file).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
