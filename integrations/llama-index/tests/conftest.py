"""Live gateways for the tests, from `trt_gateway.pytest_plugin`: `demo_target` (the committed demo model as "demo"
and "demo-b"), `echo_target` (no guided decoding) and `scripted` (guided JSON, LoRA, speculation, fixed replies,
recorded requests). The demo gateway is exported as `TRT_GATEWAY_TARGET`, TrtGateway's default `target`."""

from __future__ import annotations

import pytest

pytest_plugins = ("trt_gateway.pytest_plugin",)


@pytest.fixture(autouse=True)
def _default_target(demo_target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRT_GATEWAY_TARGET", demo_target)
