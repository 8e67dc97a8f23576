"""`make test` (what README tells a new user to run, and what CI runs) runs every suite even when one fails, and fails
at the end naming the failed ones. Checked with a stand-in interpreter that fails on chosen suites, so the real suites
do not run here."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def make_test(tmp_path: Path, failing: str) -> subprocess.CompletedProcess[str]:
    """`failing`: a shell `case` pattern over the interpreter's arguments."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    # Records each command, and fails those whose arguments match `failing`.
    python.write_text(f'#!/bin/sh\necho "ran: $*" >> {tmp_path}/ran\ncase "$*" in {failing}) exit 1;; esac\n')
    python.chmod(0o755)
    stamp = venv / ".installed"
    stamp.touch()
    projects = ("pyproject.toml", "integrations/langchain/pyproject.toml", "integrations/llama-index/pyproject.toml")
    newer = max((ROOT / p).stat().st_mtime for p in projects) + 60
    os.utime(stamp, (newer, newer))  # "installed": make must not try to build this venv
    return subprocess.run(["make", "--no-print-directory", "test", f"VENV={venv}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_a_failing_main_suite_does_not_stop_the_integration_suites(tmp_path: Path) -> None:
    out = make_test(tmp_path, failing='"-m pytest -q"')  # the main suite (no path: ARGS is empty)
    ran = (tmp_path / "ran").read_text()
    assert out.returncode != 0
    assert "integrations/langchain" in ran and "integrations/llama-index" in ran, ran
    assert "FAILED: main" in out.stdout and "langchain" not in out.stdout.split("FAILED:")[1]


def test_every_failed_suite_is_named_and_a_green_run_passes(tmp_path: Path) -> None:
    out = make_test(tmp_path, failing="*mypy*")
    assert out.returncode != 0 and "FAILED: lint" in out.stdout
    assert "integrations/llama-index" in (tmp_path / "ran").read_text()
    green = make_test(tmp_path / "green", failing="nothing-matches-this")
    assert green.returncode == 0, green.stdout + green.stderr
    assert "all suites passed" in green.stdout
