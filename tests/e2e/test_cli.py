"""The CLI as a user runs it: `trt-gateway serve` in a subprocess, `generate` / `health` / `models` against it,
SIGTERM draining an in-flight stream, and configuration errors."""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CLI = [sys.executable, "-m", "trt_gateway.cli"]
DEMO = Path(__file__).parents[2] / "trt_gateway/assets/demo/target"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


class Lines:
    """A subprocess pipe read line by line on a thread, so a test waits for a line, never for a guessed time (and a
    chatty server never blocks on a full pipe)."""

    def __init__(self, pipe: Any) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(pipe,), daemon=True).start()

    def _read(self, pipe: Any) -> None:
        for line in pipe:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, needle: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line with {needle!r} in {timeout}s; seen: {self.seen}") from None
            if line is None:
                raise AssertionError(f"the pipe closed before a line with {needle!r}; seen: {self.seen}")
            self.seen.append(line)
            if needle in line:
                return line

    def rest(self, timeout: float = 30) -> list[str]:
        """Every line until the pipe closes."""
        deadline = time.monotonic() + timeout
        while (line := self._queue.get(timeout=max(0.0, deadline - time.monotonic()))) is not None:
            self.seen.append(line)
        return self.seen


@contextmanager
def serving(
    *args: str, startup_s: float = 60, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port), "--no-http", *args], stderr=subprocess.PIPE, text=True,
                            env=env)
    target = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while cli("health", "--target", target).stdout.strip() != "SERVING":
            assert proc.poll() is None, f"serve exited early: {proc.stderr.read() if proc.stderr else ''}"
            assert time.monotonic() < deadline, "server did not become SERVING"
            time.sleep(0.2)
        yield proc, target
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def test_echo_serve_generate_health_models() -> None:
    with serving("--executor", "echo") as (_, target):
        out = cli("generate", "héllo wörld", "--stream", "--target", target, "--stop", "wö")
        assert out.returncode == 0, out.stderr
        assert out.stdout == "héllo \n"
        assert "stop_string" in out.stderr
        models = [json.loads(line) for line in cli("models", "--target", target).stdout.splitlines()]
        assert models[0]["name"] == "echo" and models[0]["executor"] == "echo"
        bad = cli("generate", "x", "--top-p", "3", "--target", target)
        assert bad.returncode == 1 and "sampling.top_p" in bad.stderr


def _stream(target: str, max_tokens: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "generate", "abcdefghij", "--stream", "--ignore-eos", "--max-tokens", str(max_tokens), "--target", target],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_sigterm_lets_the_in_flight_stream_finish_and_exits_zero() -> None:
    with serving("--executor", "echo", "--option", "token_delay_s=0.02") as (proc, target):
        stream = _stream(target, 60)
        assert stream.stdout is not None
        first = stream.stdout.read(1)  # blocks until the first token arrived: the stream is running
        proc.send_signal(signal.SIGTERM)
        out, err = stream.communicate(timeout=30)
        assert stream.returncode == 0, err
        assert first + out.strip() == ("abcdefghij" * 6)
        assert "[length;" in err
        assert proc.wait(timeout=30) == 0


def test_a_second_sigterm_cuts_the_drain_short_and_exits_143() -> None:
    with serving("--executor", "echo", "--option", "token_delay_s=0.05", "--grace-period", "120") as (proc, target):
        log = Lines(proc.stderr)
        stream = _stream(target, 2000)  # ~100 s: far longer than this test may take
        assert stream.stdout is not None
        stream.stdout.read(1)
        proc.send_signal(signal.SIGTERM)
        log.wait_for("draining: up to 120.0s")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        _, err = stream.communicate(timeout=30)
        assert stream.returncode == 1 and "Unavailable" in err and "the server shut down" in err
        assert sum("second SIGTERM" in line for line in log.rest()) == 1


def test_default_serve_offline_falls_back_to_the_demo_model_with_one_warning(tmp_path: Path) -> None:
    # No network and an empty cache: the default (SmolLM2-135M-Instruct) cannot be fetched, the demo model serves.
    env = {**os.environ, "TRT_GATEWAY_OFFLINE": "1", "TRT_GATEWAY_CACHE": str(tmp_path)}
    with serving(env=env) as (proc, target):
        models = [json.loads(line) for line in cli("models", "--target", target).stdout.splitlines()]
        assert models[0]["name"] == "demo" and models[0]["executor"] == "native"
        out = cli("generate", "The for statement", "--stream", "--max-tokens", "24", "--temperature", "0",
                  "--target", target)
        assert out.returncode == 0, out.stderr
        words = out.stdout.split()
        assert len(words) >= 5 and sum(w.isalpha() for w in words) >= 3  # text, not token soup
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=30)[1]
    warnings = [line for line in err.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "serving the small demo model" in warnings[0], err
    assert "engine ready in" in err  # the load and warm-up report, with timings


def error_lines(stderr: str) -> list[str]:
    """stderr less the INFO log records that report progress (listening, loading)."""
    return [line for line in stderr.splitlines() if not re.match(r"\d{4}-\d\d-\d\d [\d:,]+ INFO ", line)]


def _corrupt(tmp_path: Path, name: str) -> Path:
    model = tmp_path / "model"
    shutil.copytree(DEMO, model)
    data = (model / name).read_bytes()
    (model / name).write_bytes(data[: len(data) // 2])
    return model


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("hub-id", "no model hub"),
        ("missing-path", "no such file or directory"),
        ("stray-file", "is a file; pass the checkpoint directory"),
        ("not-a-checkpoint", "is not a checkpoint directory: no config.json"),
        ("unsupported-architecture", "GPT2LMHeadModel"),
        ("corrupt-safetensors", "model.safetensors is corrupt or unreadable"),
        ("corrupt-config", "config.json is not a readable JSON file"),
        ("corrupt-tokenizer", "tokenizer.json cannot be read"),
        ("kv-budget-too-small", "raise kv_cache_bytes (--kv-cache-bytes)"),
        ("max-model-len-over-budget", "lower max_model_len (--max-model-len)"),
        ("grpc-port-in-use", "for gRPC: Address already in use"),
        ("http-port-in-use", "for HTTP: Address already in use"),
    ],
)
def test_start_up_failures_are_one_line_and_exit_2(tmp_path: Path, case: str, needle: str) -> None:
    args = ["--port", "0", "--http-port", "0"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = str(taken.getsockname()[1])
        if case == "hub-id":
            args += ["--model", "HuggingFaceTB/SmolLM2-135M"]
        elif case == "missing-path":
            args += ["--model", str(tmp_path / "nothing")]
        elif case == "stray-file":
            args += ["--model", str(DEMO / "model.safetensors")]
        elif case == "not-a-checkpoint":
            args += ["--model", str(tmp_path)]
        elif case == "unsupported-architecture":
            gpt2 = tmp_path / "gpt2"
            shutil.copytree(DEMO, gpt2)
            (gpt2 / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
            args += ["--model", str(gpt2)]
        elif case.startswith("corrupt-"):
            name = {"safetensors": "model.safetensors", "config": "config.json", "tokenizer": "tokenizer.json"}
            args += ["--model", str(_corrupt(tmp_path, name[case.removeprefix("corrupt-")]))]
        elif case == "kv-budget-too-small":
            args += ["--model", str(DEMO), "--kv-cache-bytes", "64KiB"]
        elif case == "max-model-len-over-budget":
            args += ["--model", str(DEMO), "--kv-cache-bytes", "1MiB", "--max-model-len", "1024"]
        elif case == "grpc-port-in-use":
            args += ["--executor", "echo", "--port", busy]
        elif case == "http-port-in-use":
            args += ["--executor", "echo", "--http-port", busy]
        out = cli("serve", *args)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = error_lines(out.stderr)
    assert len(lines) == 1 and needle in lines[0], out.stderr


def test_engine_flags_reach_the_engine_and_a_default_length_is_fitted_with_one_warning() -> None:
    # 4 MiB of float32 KV (512 tokens of the demo model) holds fewer tokens than the demo model's maximum: the length is lowered, not refused.
    with serving("--model", str(DEMO), "--kv-cache-bytes", "4MiB", "--dtype", "float32") as (proc, target):
        models = [json.loads(line) for line in cli("models", "--target", target).stdout.splitlines()]
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=30)[1]
    limit = models[0]["max_context_length"]
    assert 128 <= limit < json.loads((DEMO / "config.json").read_text())["max_position_embeddings"]
    warnings = [line for line in err.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and f"to {limit} tokens" in warnings[0], err


def test_serve_help_shows_every_default() -> None:
    from trt_gateway.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    serve = sub.choices["serve"]
    missing = [a.option_strings[-1] for a in serve._actions
               if a.option_strings and a.dest != "help" and "default" not in (a.help or "")]
    assert missing == []
    text = cli("serve", "--help").stdout
    assert "--max-model-len" in text and "--kv-cache-bytes" in text and "--gpu-memory-utilization" in text


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--executor", "nope"], "unknown executor 'nope'"),
        (["--speculative", "draft"], "executor.speculative.draft_model"),
        (["--max-loras", "0"], "executor.lora.max_loras"),
    ],
)
def test_configuration_errors_exit_2_naming_the_key(args: list[str], needle: str) -> None:
    out = cli("serve", "--port", "0", "--http-port", "0", *args)
    assert out.returncode == 2
    assert needle in out.stderr


def test_config_file_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[server]\nprot = 5\n')
    out = cli("serve", "--config", str(path))
    assert out.returncode == 2 and "server.prot" in out.stderr
