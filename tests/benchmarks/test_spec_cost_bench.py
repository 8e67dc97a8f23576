"""benchmarks/spec_cost_bench.py on CPU with a tiny random model: both variants run in their own child processes, the
`rejected` one really verifies drafts on every step (and accepts none), and the JSON carries the break-even."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "spec_cost_bench.py"


def test_spec_cost_bench_tiny_cpu() -> None:
    args = ["--device", "cpu", "--tiny", "--input-len", "16", "--output-len", "12", "--num-draft-tokens", "3"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    plain, rejected = result["variants"]["plain"], result["variants"]["rejected"]
    assert plain["draft_tokens"] == 0 and plain["steps_per_request"] == 12
    # every step of the rejected variant verified 3 drafts (fewer near max_tokens) and yielded exactly one token
    assert rejected["steps_per_request"] == 12 and rejected["accepted_tokens"] == 0
    assert rejected["draft_tokens"] > 3 * 12
    want = round(rejected["ms_per_token"] / plain["ms_per_token"], 3)
    assert result["break_even_tokens_per_verification"] == want
