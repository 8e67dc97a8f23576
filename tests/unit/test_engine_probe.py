"""engine_probe: what an installed engine package has (symbols, fields, keywords), and constructor arguments checked
against it before the engine is built."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from trt_gateway.config import ConfigError
from trt_gateway.executors import engine_probe as probe


@dataclasses.dataclass
class Params:
    temperature: float = 1.0
    _cache: int = dataclasses.field(default=0, init=False)


class Struct:  # msgspec's shape
    __struct_fields__ = ("top_p", "_private")


class Model:  # pydantic's shape
    model_fields = {"max_batch_size": object()}


class Plain:
    def __init__(self, model: str, *args: Any, dtype: str = "auto", **kwargs: Any) -> None: ...


def test_optional_and_first() -> None:
    assert probe.optional("json", "dumps") is not None
    assert probe.optional("json", "no_such_name") is None
    assert probe.optional("no_such_module_here", "x") is None
    assert probe.first([("no_such_module_here", "x"), ("json", "nope"), ("json", "loads")]).__name__ == "loads"
    assert probe.first([("json", "nope")]) is None


def test_present_drops_what_this_version_lacks() -> None:
    assert probe.present(ValueError, None, KeyError) == (ValueError, KeyError)
    assert probe.present(None) == ()


def test_fields_and_keywords() -> None:
    assert probe.fields_of(Params) == {"temperature"}  # init fields only
    assert probe.fields_of(Struct) == {"top_p"}
    assert probe.fields_of(Model) == {"max_batch_size"}
    assert probe.fields_of(Plain) is None and probe.fields_of(None) is None
    assert probe.keywords(Plain) == {"model", "dtype"}  # not self, *args, **kwargs
    assert probe.init_fields(Plain) == {"model", "dtype"} and probe.init_fields(Params) == {"temperature"}


def test_known_arguments() -> None:
    known = probe.KnownArguments(frozenset({"model", "dtype"}), "Engine 1.0 has no argument")
    kwargs: dict[str, Any] = {}
    known.add(kwargs, {"dtype": "half", "model": None}, "executor.options")
    assert kwargs == {"dtype": "half", "model": None}
    with pytest.raises(ConfigError, match=r"^executor.options.extra.seed: Engine 1.0 has no argument 'seed'$"):
        known.add(kwargs, {"seed": 1}, "executor.options.extra")
    probe.KnownArguments(None, "unused").require("anything", "x")  # not inspectable: the engine checks for itself
