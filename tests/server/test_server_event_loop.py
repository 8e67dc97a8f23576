"""`server.event_loop`: asyncio by default; uvloop only when asked for, and a clear error when it is not installed."""

from __future__ import annotations

import asyncio
import sys

import pytest

from trt_gateway.config import ConfigError, from_mapping
from trt_gateway.executors.echo import EchoExecutor
from trt_gateway.server import app


class DyingEcho(EchoExecutor):
    """Echo that dies as soon as it started, so `serve` returns on its own."""

    async def start(self) -> None:
        await super().start()
        self.kill()


def config(**server: object):
    return from_mapping({"server": {"host": "127.0.0.1", "port": 0, "http": False, **server}, "executor": {"name": "echo"}})


def test_asyncio_is_the_default() -> None:
    assert config().server.event_loop == "asyncio"
    assert app.loop_factory("asyncio") is None


def test_uvloop_without_the_package_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if it were not installed
    with pytest.raises(ConfigError, match="pip install uvloop"):
        app.loop_factory("uvloop")


def test_an_unknown_event_loop_is_refused() -> None:
    with pytest.raises(ConfigError, match="server.event_loop"):
        config(event_loop="trio")


def test_run_serves_on_the_loop_the_config_names(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[asyncio.AbstractEventLoop] = []
    asked: list[str] = []

    def factory() -> asyncio.AbstractEventLoop:
        made.append(asyncio.new_event_loop())
        return made[-1]

    def loop_factory(name: str):
        asked.append(name)
        return factory

    monkeypatch.setattr(app, "loop_factory", loop_factory)
    assert app.run(config(event_loop="uvloop"), DyingEcho()) == app.EXIT_ENGINE_DEAD
    assert asked == ["uvloop"] and len(made) == 1 and made[0].is_closed()


def test_the_serve_flags_reach_the_server_config() -> None:
    from trt_gateway.cli import build_parser, serve_overrides

    args = build_parser().parse_args(["serve", "--event-loop", "uvloop", "--stream-coalesce-tokens", "1"])
    server = from_mapping(serve_overrides(args)).server
    assert server.event_loop == "uvloop" and server.stream_coalesce_tokens == 1
    assert from_mapping(serve_overrides(build_parser().parse_args(["serve"]))).server.stream_coalesce_tokens == 64
