"""The benchmark scripts' tests. The vLLM benchmark runs against the `vllm` test double (tests/doubles.py)."""

from __future__ import annotations

from typing import Any

import pytest
from doubles import install, vllm_control  # noqa: F401  (vllm_control: a fixture)

install("vllm")


@pytest.fixture
def control(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue("vllm_control")
