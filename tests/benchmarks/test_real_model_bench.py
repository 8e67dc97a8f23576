"""benchmarks/real_model_bench.py in tiny mode: a GGUF written from the committed demo model stands in for the real
one; every path (engine, gateway over gRPC, HF transformers) reports a positive decode rate in the JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trt_gateway.executors.native import DEMO_MODEL

pytest.importorskip("gguf")
from gguf_files import write_gguf  # noqa: E402  (needs gguf)

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "real_model_bench.py"


def test_real_model_bench_tiny(tmp_path: Path) -> None:
    model = write_gguf(DEMO_MODEL, tmp_path / "demo.gguf", "Q8_0")
    result_file = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", str(model), "--new-tokens", "4", "--repeats", "1",
         "--batch-sizes", "1,2", "--threads", "1", "--result-file", str(result_file)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    assert json.loads(result_file.read_text()) == result
    assert result["model"] == "demo.gguf" and result["workload"]["new_tokens"] == 4
    for path in ("engine", "gateway_grpc", "hf_transformers"):
        assert set(result["decode_tok_s"][path]) == {"batch1", "batch2"}, path
        assert all(rate > 0 for rate in result["decode_tok_s"][path].values()), path
    assert set(result["engine_vs_hf"]) == {"batch1", "batch2"}
