"""The demo gateway (`trt_gateway.pytest_plugin`, loaded in tests/conftest.py) is every model's default target."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _default_target(demo_target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRT_GATEWAY_TARGET", demo_target)
