"""The trtllm executor's tests run against the `tensorrt_llm` test double in ./fake (tests/doubles.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from doubles import install, trtllm_control, write_model  # noqa: F401  (trtllm_control: a fixture)

install("trtllm")


@pytest.fixture(autouse=True)
def control(request: pytest.FixtureRequest) -> Any:
    """A fresh scripted model per test; every LLM the test built is shut down afterwards."""
    return request.getfixturevalue("trtllm_control")


@pytest.fixture
def model_dir(tmp_path: Path) -> str:
    return write_model(tmp_path / "tiny-llama")
