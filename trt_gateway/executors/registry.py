"""Executor plug-ins: the entry-point group `trt_gateway.executors` maps a name to a factory.

A factory is a callable `(ExecutorConfig) -> Executor`. Another package adds a backend by declaring, in its own
pyproject.toml:

    [project.entry-points."trt_gateway.executors"]
    mybackend = "my_package.executor:MyExecutor.from_config"

The built-in executors are listed here too, so a source checkout works without being pip-installed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points

from trt_gateway.config import ConfigError, ExecutorConfig
from trt_gateway.executors.base import Executor

GROUP = "trt_gateway.executors"
BUILTIN = {
    "echo": "trt_gateway.executors.echo:EchoExecutor.from_config",
    "native": "trt_gateway.executors.native:NativeExecutor.from_config",
    "trtllm": "trt_gateway.executors.trtllm:TrtllmExecutor.from_config",
    "vllm": "trt_gateway.executors.vllm:VllmExecutor.from_config",
}

Factory = Callable[[ExecutorConfig], Executor]


def available() -> dict[str, str]:
    """Executor name -> object reference, plug-ins overriding nothing built in."""
    found = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    return {**found, **BUILTIN}


def _load(ref: str) -> Factory:
    module_name, _, attr = ref.partition(":")
    obj: object = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[return-value]


def create(config: ExecutorConfig) -> Executor:
    refs = available()
    if config.name not in refs:
        raise ConfigError(f"executor.name: unknown executor {config.name!r}; available: {', '.join(sorted(refs))}")
    try:
        factory = _load(refs[config.name])
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"executor {config.name!r} cannot be loaded ({refs[config.name]}): {exc}") from exc
    return factory(config)
