"""benchmarks/http_bench.py runs both paths against one gateway child and reports every figure for each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "http_bench.py"


def test_http_bench_small_run() -> None:
    args = ["--concurrency", "1", "3", "--requests", "6", "--tokens", "16", "--repeats", "1"]
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout)["results"]
    for c in ("concurrency_1", "concurrency_3"):
        row = results[c]
        assert row["grpc"]["tokens"] == row["http"]["tokens"] == 6 * 16  # every token arrived on both paths
        assert row["http_over_grpc_tokens_per_s"] > 0
