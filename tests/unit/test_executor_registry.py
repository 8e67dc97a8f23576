"""executors.registry: built-ins, the entry-point group, unknown names, plug-ins that fail to load."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from trt_gateway.config import ConfigError, ExecutorConfig, LoraConfig
from trt_gateway.executors import registry
from trt_gateway.executors.echo import EchoExecutor


def fake_entry_points(*eps: EntryPoint):
    seen: list[str] = []

    def entry_points(*, group: str):
        seen.append(group)
        return [ep for ep in eps if ep.group == group]

    return entry_points, seen


def test_group_name() -> None:
    assert registry.GROUP == "trt_gateway.executors"


def test_builtins_are_available() -> None:
    names = registry.available()
    assert {"echo", "native", "trtllm"} <= set(names)
    assert names["echo"] == "trt_gateway.executors.echo:EchoExecutor.from_config"


def test_create_echo_passes_the_config_through() -> None:
    cfg = ExecutorConfig(
        name="echo", served_name="tiny", options={"script": "ok", "max_context": 32},
        lora=LoraConfig(max_lora_rank=16, max_loras=2, max_cpu_loras=2),
    )
    ex = registry.create(cfg)
    assert isinstance(ex, EchoExecutor)
    assert ex.model_name == "tiny" and ex.script == "ok" and ex.max_context == 32
    assert ex.max_lora_rank == 16 and ex.max_loras == 2


def test_unknown_echo_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown echo option.*bogus"):
        registry.create(ExecutorConfig(name="echo", options={"bogus": 1}))


def test_unknown_name_lists_the_available_ones(monkeypatch) -> None:
    eps, seen = fake_entry_points(
        EntryPoint("zeta", "trt_gateway.executors.echo:EchoExecutor.from_config", registry.GROUP),
        EntryPoint("elsewhere", "x:y", "another.group"),
    )
    monkeypatch.setattr(registry, "entry_points", eps)
    with pytest.raises(ConfigError) as err:
        registry.create(ExecutorConfig(name="vllmx"))
    message = str(err.value)
    assert "executor.name" in message and "'vllmx'" in message
    assert "available: echo, native, trtllm, vllm, zeta" in message  # sorted, plug-ins included
    assert "elsewhere" not in message
    assert seen and set(seen) == {"trt_gateway.executors"}


def test_plugin_from_entry_point_is_created(monkeypatch) -> None:
    eps, _ = fake_entry_points(
        EntryPoint("mine", "trt_gateway.executors.echo:EchoExecutor.from_config", registry.GROUP)
    )
    monkeypatch.setattr(registry, "entry_points", eps)
    assert registry.available()["mine"] == "trt_gateway.executors.echo:EchoExecutor.from_config"
    assert isinstance(registry.create(ExecutorConfig(name="mine")), EchoExecutor)


def test_plugin_cannot_override_a_builtin(monkeypatch) -> None:
    eps, _ = fake_entry_points(EntryPoint("echo", "evil.module:Factory", registry.GROUP))
    monkeypatch.setattr(registry, "entry_points", eps)
    assert registry.available()["echo"] == registry.BUILTIN["echo"]
    assert isinstance(registry.create(ExecutorConfig(name="echo")), EchoExecutor)


@pytest.mark.parametrize("ref", ["no_such_module_xyz:Factory", "trt_gateway.executors.echo:Missing.from_config"])
def test_plugin_that_cannot_load_is_a_config_error(monkeypatch, ref: str) -> None:
    eps, _ = fake_entry_points(EntryPoint("broken", ref, registry.GROUP))
    monkeypatch.setattr(registry, "entry_points", eps)
    with pytest.raises(ConfigError) as err:
        registry.create(ExecutorConfig(name="broken"))
    assert "'broken' cannot be loaded" in str(err.value) and ref in str(err.value)
