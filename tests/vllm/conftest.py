"""The vllm executor's tests run against the `vllm` test double in ./fake, put first on sys.path here."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

FAKE = Path(__file__).resolve().parent / "fake"
if str(FAKE) not in sys.path:
    sys.path.insert(0, str(FAKE))

from vllm import _fake  # noqa: E402  (needs the path above)
from vllm_helpers import write_model  # noqa: E402


@pytest.fixture(autouse=True)
def control(monkeypatch: pytest.MonkeyPatch) -> Iterator[_fake.Control]:
    """A fresh scripted model per test; every engine the test built is shut down afterwards."""
    _fake.reset()
    monkeypatch.delenv("VLLM_WORKER_MULTIPROC_METHOD", raising=False)  # the executor sets it; keep tests apart
    yield _fake.CONTROL
    for engine in _fake.CONTROL.engines:
        engine.shutdown()
    _fake.reset()


@pytest.fixture
def model_dir(tmp_path: Path) -> str:
    return write_model(tmp_path / "tiny-llama")
