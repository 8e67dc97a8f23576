"""Pytest fixtures for testing code that calls a gateway: live gateways of `trt_gateway.testing`, each in its own
thread and event loop (so sync entry points and async ones, on pytest-asyncio's loop, can both call them), started
once per session. Enable them in a conftest.py with `pytest_plugins = ("trt_gateway.pytest_plugin",)`.

- `demo_target`: the embedded engine serving the committed demo model, as "demo" and also as "demo-b" (the same
  weights under a second name, as a two-model deployment looks to a client);
- `echo_target`: the plain echo executor, a model without guided decoding;
- `scripted` (per test, reset) over `scripted_gateway` (per session): an echo-based executor that reports guided
  JSON decoding, LoRA and speculative decoding, replies with a fixed text (or JSON), records each request, and
  requires `testing.API_KEY`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from trt_gateway.executors.echo import EchoExecutor
from trt_gateway.executors.native import DEMO_MODEL
from trt_gateway.testing import API_KEY, LiveGateway, Scripted, TwoNameDemo


@pytest.fixture(scope="session")
def demo_target() -> Iterator[str]:
    import torch

    # One torch thread for the in-process engine: with two or more, torch's worker threads spin-wait, and on a
    # small shared machine (2 cores, the gRPC threads and the test client beside them) that made the demo model
    # 10-20x slower whenever anything else ran, with no gain when nothing did (an 8M-parameter model).
    torch.set_num_threads(1)
    with LiveGateway(TwoNameDemo(DEMO_MODEL)) as target:
        yield target


@pytest.fixture(scope="session")
def echo_target() -> Iterator[str]:
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
