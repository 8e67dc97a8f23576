"""benchmarks/engine_bench.py on CPU with a tiny random model: the engine and HF-static phases run (each in its own
child process, as on the GPU), the JSON has the figures and ratios, and every request produced exactly its tokens.
HF continuous batching is left out: on CPU its manager alone takes many seconds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "engine_bench.py"

ARGS = [
    "--device", "cpu", "--tiny", "--threads", "1", "--phases", "engine,hf-static",
    "--input-len", "8", "--output-len", "4", "--requests", "4", "--concurrency", "1,2,4",
    "--requests-per-slot", "2", "--itl-tokens", "4", "--repeats", "2", "--warmup-tokens", "2",
    "--hf-batch-sizes", "1,2", "--hf-b1-tokens", "3",
]  # fmt: skip


def test_engine_bench_tiny_cpu(tmp_path: Path) -> None:
    result_file = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *ARGS, "--result-file", str(result_file)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    assert json.loads(result_file.read_text()) == result

    for key in ("date", "gpu", "torch", "transformers", "model", "workload", "ratios", "reference", "phases"):
        assert key in result, key
    assert result["errors"] == {}
    assert result["token_counts_ok"] is True
    assert result["model"]["name"] == "tiny" and result["model"]["weights"] == "random"
    assert result["reference"]["note"] == "reference, not measured in this run"
    assert result["reference"]["comparable_to_this_run"] is False

    engine = result["phases"]["engine"]
    assert engine["load_format"] == "dummy" and engine["token_counts_ok"] is True
    batch1 = engine["batch1"]
    assert batch1["decode_tok_s"] > 0 and batch1["ttft_ms"] > 0 and len(batch1["itl_ms_samples"]) == 2
    saturated = engine["saturated"]
    assert saturated["requests"] == 4 and saturated["output_tokens"] == 4 * 4 and saturated["exact"]
    levels = {row["concurrency"]: row for row in engine["concurrency"]}
    assert sorted(levels) == [1, 2, 4]
    assert levels[1]["requests"] == 2 and levels[1]["output_tokens"] == 2 * 4  # min(requests, 1 x 2 per slot)
    assert levels[2]["requests"] == 4 and levels[2]["output_tokens"] == 4 * 4
    assert levels[4] == {**saturated, "concurrency": 4}  # all at once: the saturated run
    assert all(row["exact"] and row["output_tok_s"] > 0 for row in levels.values())

    static = result["phases"]["hf-static"]
    assert static["token_counts_ok"] is True
    runs = {row["batch_size"]: row for row in static["runs"]}
    assert runs[1]["output_len"] == 3 and runs[2]["output_len"] == 4
    assert runs[1]["output_tok_s"] > 0 and runs[2]["output_tok_s"] > 0
    assert result["hf_batch1_decode_tok_s"] is not None

    ratios = result["ratios"]
    assert ratios["engine_vs_hf_batch1"] > 0 and ratios["engine_vs_hf_saturated"] > 0
    assert ratios["hf_best_saturated"]["source"].startswith("hf-static")
    assert result["engine_saturated_output_tok_s"] == saturated["output_tok_s"]

    # --merge of the run's own result gives the same figures.
    merged = subprocess.run(
        [sys.executable, str(SCRIPT), "--merge", str(result_file)], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert merged.returncode == 0, merged.stderr[-2000:]
    again = json.loads(merged.stdout)
    assert again["phases"] == result["phases"] and again["ratios"] == result["ratios"]
