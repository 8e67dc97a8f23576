"""Fixtures: the live gateways of gateways.py, started once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from trt_gateway.executors.native import DEMO_MODEL

from tests.integration_tests.gateways import API_KEY, LiveGateway, Scripted, TwoNameDemo


@pytest.fixture(scope="session")
def demo_target() -> Iterator[str]:
    with LiveGateway(TwoNameDemo(DEMO_MODEL)) as target:
        yield target


@pytest.fixture(autouse=True)
def _default_target(demo_target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRT_GATEWAY_TARGET", demo_target)


@pytest.fixture(scope="session")
def scripted_gateway() -> Iterator[tuple[str, Scripted]]:
    executor = Scripted()
    with LiveGateway(executor, server={"api_keys": [API_KEY]}) as target:
        yield target, executor


@pytest.fixture
def scripted(scripted_gateway: tuple[str, Scripted]) -> Iterator[tuple[str, Scripted]]:
    target, executor = scripted_gateway
    executor.requests.clear()
    executor.word_delay_s = 0.0
    executor.peak_in_flight = 0
    yield target, executor
