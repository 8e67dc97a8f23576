"""Asking an installed engine package (tensorrt_llm, vllm) what it has, so that no version is pinned.

Symbols move between modules and releases, and constructors gain and lose keywords; trtllm/api.py and vllm/api.py
resolve everything once, at start-up, with these questions, and the executors branch on the answers.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trt_gateway.config import ConfigError

_NOT_KEYWORDS = ("self", "cls", "args", "kwargs")


def optional(module: str, name: str) -> Any:
    """`module.name`, or None where the module cannot be imported or lacks the name."""
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


def first(candidates: Sequence[tuple[str, str]]) -> Any:
    """The first of several (module, name) homes that a symbol has had, or None."""
    return next((obj for obj in (optional(m, n) for m, n in candidates) if obj is not None), None)


def present(*classes: type[BaseException] | None) -> tuple[type[BaseException], ...]:
    """The exception classes this version has, for an `except` clause (an empty tuple catches nothing)."""
    return tuple(c for c in classes if c is not None)


def keywords(fn: Callable[..., Any]) -> frozenset[str]:
    """The named parameters of a function or constructor."""
    return frozenset(p for p in inspect.signature(fn).parameters if p not in _NOT_KEYWORDS)


def fields_of(cls: Any) -> frozenset[str] | None:
    """Constructor fields of a dataclass, a msgspec Struct or a pydantic model; None when none of those."""
    if dataclasses.is_dataclass(cls):
        return frozenset(f.name for f in dataclasses.fields(cls) if f.init)
    struct = getattr(cls, "__struct_fields__", None)
    if isinstance(struct, tuple):
        return frozenset(f for f in struct if not f.startswith("_"))
    model = getattr(cls, "model_fields", None)
    return frozenset(model) if isinstance(model, Mapping) else None


def init_fields(cls: type) -> frozenset[str]:
    """What `cls(...)` accepts: its declared fields, else its constructor's parameters."""
    return fields_of(cls) or keywords(cls)


@dataclass(frozen=True)
class KnownArguments:
    """The keyword arguments an engine's constructor accepts, to check a configuration against before the engine is
    built: an argument this version lacks is a ConfigError naming the option it came from, not a TypeError minutes
    into loading."""

    names: frozenset[str] | None  # None: not inspectable; everything passes and the engine checks for itself
    lacking: str  # what an error says before the name, e.g. "vLLM 0.26.0 has no AsyncEngineArgs field"

    def require(self, key: str, where: str) -> None:
        if self.names is not None and key not in self.names:
            raise ConfigError(f"{where}: {self.lacking} {key!r}")

    def add(self, kwargs: dict[str, Any], values: Mapping[str, Any], prefix: str) -> None:
        """Put `values` into `kwargs`, each checked; `prefix.key` is the option it came from."""
        for key, value in values.items():
            self.require(key, f"{prefix}.{key}")
            kwargs[key] = value
