"""The trtllm executor's tests run against the `tensorrt_llm` test double in ./fake, put first on sys.path here."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

FAKE = Path(__file__).resolve().parent / "fake"
if str(FAKE) not in sys.path:
    sys.path.insert(0, str(FAKE))

from tensorrt_llm import _fake  # noqa: E402  (needs the path above)
from trtllm_helpers import write_model  # noqa: E402


@pytest.fixture(autouse=True)
def control() -> Iterator[_fake.Control]:
    """A fresh scripted model per test; every LLM the test built is shut down afterwards."""
    _fake.reset()
    yield _fake.CONTROL
    for llm in _fake.CONTROL.llms:
        llm.shutdown()
    _fake.reset()


@pytest.fixture
def model_dir(tmp_path: Path) -> str:
    return write_model(tmp_path / "tiny-llama")
