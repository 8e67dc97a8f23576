"""The CLI as a user runs it: `trt-gateway serve` in a subprocess, `generate` / `health` / `models` against it,
SIGTERM draining an in-flight stream, and configuration errors."""

from __future__ import annotations

import json
import queue
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
def serving(*args: str, startup_s: float = 60) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port), "--no-http", *args], stderr=subprocess.PIPE, text=True)
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


def test_default_serve_is_the_demo_model_and_streams_text() -> None:
    with serving() as (_, target):
        models = [json.loads(line) for line in cli("models", "--target", target).stdout.splitlines()]
        assert models[0]["name"] == "demo" and models[0]["executor"] == "native"
        out = cli("generate", "The for statement", "--stream", "--max-tokens", "24", "--temperature", "0",
                  "--target", target)
        assert out.returncode == 0, out.stderr
        words = out.stdout.split()
        assert len(words) >= 5 and sum(w.isalpha() for w in words) >= 3  # text, not token soup


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


def test_checkpoints_the_engine_cannot_run_fail_at_start_up(tmp_path: Path) -> None:
    missing = cli("serve", "--port", "0", "--http-port", "0", "--model", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "has no tokenizer.json" in missing.stderr
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "tokenizer.json").write_text((Path(__file__).parents[2] / "trt_gateway/assets/demo/target/tokenizer.json").read_text())
    (gpt2 / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    unsupported = cli("serve", "--port", "0", "--http-port", "0", "--model", str(gpt2))
    assert unsupported.returncode == 2 and "GPT2LMHeadModel" in unsupported.stderr
    assert "Traceback" not in unsupported.stderr
