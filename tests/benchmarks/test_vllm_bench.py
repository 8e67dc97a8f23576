"""benchmarks/vllm_gateway_bench.py against the double: both phases run end to end, so a broken benchmark is found
here rather than on a GPU machine's clock. The figures are meaningless; only the shape of the result is checked."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAKE = ROOT / "tests" / "vllm" / "fake"
SMALL = ["--requests", "12", "--concurrency", "6", "--channels", "2", "--input-len", "6", "--output-len", "5",
         "--itl-tokens", "9", "--itl-repeats", "2", "--max-model-len", "64", "--max-num-seqs", "8"]


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("vllm_gateway_bench", ROOT / "benchmarks" / "vllm_gateway_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _last_json(out: str) -> dict[str, Any]:
    return dict(json.loads(out.strip().splitlines()[-1]))


def test_offline_phase(capfd: pytest.CaptureFixture[str], control: Any) -> None:
    assert _bench().main(["--phase", "offline", *SMALL]) == 0
    result = _last_json(capfd.readouterr().out)["offline"]
    assert result["requests"] == 12 and result["output_tokens"] == 12 * 5
    assert result["output_tok_s"] > 0 and result["batch1_itl_ms"] == result["batch1_itl_ms"]  # not NaN
    args = control.engine_args[-1]
    assert (args.load_format, args.skip_tokenizer_init, args.dtype, args.max_model_len) == ("dummy", True, "bfloat16",
                                                                                             64)
    assert control.submissions[-1]["params"].detokenize is False  # token ids in, token ids out


def test_gateway_phase(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The serve child is `trt-gateway`'s own serve() with the vllm executor, found through PYTHONPATH here."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FAKE), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    code = _bench().main(["--phase", "gateway", "--port", str(_free_port()), "--start-timeout-s", "60", *SMALL])
    assert code == 0
    result = _last_json(capfd.readouterr().out)["gateway"]
    assert result["requests"] == 12 and result["output_tokens"] == 12 * 5 and result["concurrency"] == 6
    assert result["chunks_per_request"] >= 1 and result["ttft_p50_ms"] > 0


def test_model_dir_gets_a_config(tmp_path: Path) -> None:
    bench = _bench()
    target = tmp_path / "shared" / "llama"
    assert bench.model_dir(bench.parse_args(["--model-dir", str(target)])) == str(target)
    assert json.loads((target / "config.json").read_text())["num_hidden_layers"] == 32
    (target / "config.json").write_text('{"vocab_size": 5}')  # an existing config is left alone
    bench.model_dir(bench.parse_args(["--model-dir", str(target)]))
    assert json.loads((target / "config.json").read_text()) == {"vocab_size": 5}


def test_small_output_lengths_make_a_valid_gateway_config() -> None:
    """limits.default_max_tokens must not exceed limits.max_tokens when the run asks for fewer than 256 tokens."""
    bench = _bench()
    args = bench.parse_args(["--output-len", "8", "--itl-tokens", "16"])
    config = bench.gateway_config(args, "/models/x")
    assert config.limits.max_tokens == 16 and config.limits.default_max_tokens == 16
    assert config.executor.name == "vllm" and config.executor.options["skip_tokenizer_init"] is True
