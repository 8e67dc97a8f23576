"""Fixtures: the live gateways of `trt_gateway.testing`, started once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from trt_gateway.executors.echo import EchoExecutor
from trt_gateway.executors.native import DEMO_MODEL
from trt_gateway.testing import API_KEY, LiveGateway, Scripted, TwoNameDemo


@pytest.fixture(scope="session")
def demo_target() -> Iterator[str]:
    # One torch thread for the in-process engine: with two or more, torch's worker threads spin-wait, and on a
    # small shared machine (2 cores, the gRPC threads and the test client beside them) that made the demo model
    # 10-20x slower whenever anything else ran, with no gain when nothing did (an 8M-parameter model).
    torch.set_num_threads(1)
    with LiveGateway(TwoNameDemo(DEMO_MODEL)) as target:
        yield target


@pytest.fixture(autouse=True)
def _default_target(demo_target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRT_GATEWAY_TARGET", demo_target)


@pytest.fixture(scope="session")
def echo_target() -> Iterator[str]:
    """The plain echo executor: a model without guided decoding."""
    with LiveGateway(EchoExecutor()) as target:
        yield target


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
