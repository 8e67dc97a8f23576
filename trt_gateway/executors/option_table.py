"""The `[executor.options]` table of the trtllm and vllm executors, checked value by value against a schema.

Each executor's options are a frozen dataclass (trtllm/options.py, vllm/options.py) whose `__post_init__` checks how
options combine; the options both take alike are `EngineOptions`, their base. What one value may be (its type, its
minimum, whether it may be null) is data, an `OptionTable`, checked here the same way for both. Every error names
the option as `executor.options.<key>` and says why.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self, TypeVar

from trt_gateway.config import ConfigError, SpeculativeConfig

WHERE = "executor.options"
T = TypeVar("T")


@dataclass(frozen=True)
class OptionTable:
    executor: str  # "trtllm" / "vllm", for the unknown-option message
    types: Mapping[str, tuple[type, ...]]  # every option; (int, float) reads as float, (list, tuple) as a tuple
    minimum: Mapping[str, float] = field(default_factory=dict)
    nullable: frozenset[str] = frozenset()
    string_lists: Mapping[str, str] = field(default_factory=dict)  # list options: what their strings name

    def parse(self, cls: type[T], options: Mapping[str, Any]) -> T:
        """`cls(**options)`, each value checked and normalised first (`cls` then checks how they combine)."""
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(
                f"{WHERE}.{unknown[0]}: unknown {self.executor} option; known: {', '.join(sorted(known))}"
            )
        return cls(**{name: self.check(name, value) for name, value in options.items()})

    def check(self, name: str, value: Any) -> Any:
        where = f"{WHERE}.{name}"
        if value is None:
            if name in self.nullable:
                return None
            raise ConfigError(f"{where} may not be null")
        types = self.types[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join(dict.fromkeys(_type_name(t) for t in types))
            raise ConfigError(f"{where} must be {names}, got {type(value).__name__} {value!r}")
        value = _any(value)  # isinstance against a runtime tuple narrows to object
        if name in self.minimum and value < self.minimum[name]:
            raise ConfigError(f"{where} must be >= {self.minimum[name]}, got {value}")
        if name in self.string_lists:
            if not all(isinstance(item, str) for item in value):
                raise ConfigError(f"{where} must be a list of {self.string_lists[name]}")
            return tuple(value)
        if isinstance(value, Mapping):
            return dict(value)
        return float(value) if float in types else value

    def extend(
        self,
        executor: str,
        types: Mapping[str, tuple[type, ...]],
        minimum: Mapping[str, float],
        nullable: frozenset[str],
        string_lists: Mapping[str, str] | None = None,
    ) -> OptionTable:
        """This table (EngineOptions') with one executor's own options added."""
        return OptionTable(executor, {**self.types, **types}, {**self.minimum, **minimum}, self.nullable | nullable,
                           {**self.string_lists, **(string_lists or {})})


@dataclass(frozen=True)
class EngineOptions:
    """The options both engines take, under the same names as their own arguments."""

    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    dtype: str = "auto"
    tokenizer: str | None = None  # a tokenizer other than the checkpoint's
    trust_remote_code: bool = False
    enable_chunked_prefill: bool | None = None  # None: the engine's default
    max_top_logprobs: int = 20  # the most alternatives a request may ask for per token (vLLM's max_logprobs)
    stream_interval: int = 1  # engine steps per streamed response
    speculative: Mapping[str, Any] | None = None  # the engine's own speculative config, as a table
    start_in_thread: bool = True  # load the engine in a thread, so the server's loop keeps answering meanwhile


    TABLE: ClassVar[OptionTable] = OptionTable(
        executor="",
        types={
            "tensor_parallel_size": (int,), "pipeline_parallel_size": (int,), "dtype": (str,), "tokenizer": (str,),
            "trust_remote_code": (bool,), "enable_chunked_prefill": (bool,), "max_top_logprobs": (int,),
            "stream_interval": (int,), "speculative": (Mapping,), "start_in_thread": (bool,),
        },
        minimum={"tensor_parallel_size": 1, "pipeline_parallel_size": 1, "max_top_logprobs": 0, "stream_interval": 1},
        nullable=frozenset({"tokenizer", "enable_chunked_prefill", "speculative"}),
    )  # each executor's options extend it with their own

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> Self:
        return cls.TABLE.parse(cls, options)

    def engine_arguments(self) -> dict[str, Any]:
        """These options as the engine's keyword arguments, where they differ from its defaults (tensor_parallel_size
        is always passed)."""
        wanted = {
            "pipeline_parallel_size": self.pipeline_parallel_size if self.pipeline_parallel_size != 1 else None,
            "dtype": self.dtype if self.dtype != "auto" else None,
            "tokenizer": self.tokenizer,
            "trust_remote_code": self.trust_remote_code or None,
            "enable_chunked_prefill": self.enable_chunked_prefill,
            "stream_interval": self.stream_interval if self.stream_interval != 1 else None,
        }
        return {"tensor_parallel_size": self.tensor_parallel_size} | {k: v for k, v in wanted.items() if v is not None}


@dataclass(frozen=True)
class PassThrough:
    """A table option whose keys go to the engine's constructor as they are (extra_llm_args, extra_engine_args),
    for what the schema does not cover. It may not set what the schema sets itself, nor what the gateway needs left
    alone."""

    option: str  # "extra_llm_args"
    owned: frozenset[str]  # constructor arguments the schema sets
    instead: str  # how to set an owned one: "a trtllm option"
    forbidden: Mapping[str, str]  # constructor arguments the gateway needs left alone -> why

    def check(self, values: Mapping[str, Any]) -> None:
        for key in values:
            where = f"{WHERE}.{self.option}.{key}"
            if key in self.forbidden:
                raise ConfigError(f"{where}: {self.forbidden[key]}")
            if key in self.owned:
                raise ConfigError(f"{where}: set it as {self.instead}, not in {self.option}")


def check_speculation_source(options_value: Mapping[str, Any] | None, gateway: SpeculativeConfig) -> None:
    """Speculation comes from options.speculative or from the gateway's --speculative flags, never both."""
    if options_value is not None and gateway.mode:
        raise ConfigError(f"{WHERE}.speculative and executor.speculative.mode ({gateway.mode!r}) are both set; use one")


def _type_name(t: type) -> str:
    return "table" if t is Mapping else "list" if t in (list, tuple) else t.__name__


def _any(value: Any) -> Any:
    return value
