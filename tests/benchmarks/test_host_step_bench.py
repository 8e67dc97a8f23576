"""benchmarks/host_step_bench.py runs tiny on the CPU and reports every host phase for every batch size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "host_step_bench.py"
PHASES = {"schedule_next", "prepare_placeholders", "postprocess", "schedule", "prepare", "layout_only"}


def test_host_step_bench_tiny() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--batch-sizes", "1,3", "--steps", "2", "--block-size", "4"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    assert [r["batch"] for r in result["results"]] == [1, 3]
    for r in result["results"]:
        assert set(r["median_ms"]) == PHASES
        assert all(v > 0 for v in r["median_ms"].values())
