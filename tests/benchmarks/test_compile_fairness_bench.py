"""benchmarks/compile_fairness_bench.py, tiny, in a child process: it runs, and its JSON carries both sides."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "compile_fairness_bench.py"


def test_compile_fairness_bench_tiny() -> None:
    args = ["--huge", "2", "--choices", "300", "--timeout-s", "120"]
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    assert result["small"]["status"] == "OK" and result["huge_status"] == ["OK"]
    assert len(result["huge_done_s"]) == 2
