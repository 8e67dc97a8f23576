"""The vllm executor's tests run against the `vllm` test double in ./fake (tests/doubles.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from doubles import install, vllm_control, write_model  # noqa: F401  (vllm_control: a fixture)

install("vllm")


@pytest.fixture(autouse=True)
def control(request: pytest.FixtureRequest) -> Any:
    """A fresh scripted model per test; every engine the test built is shut down afterwards."""
    return request.getfixturevalue("vllm_control")


@pytest.fixture
def model_dir(tmp_path: Path) -> str:
    return write_model(tmp_path / "tiny-llama")
