"""option_table: each `[executor.options]` value checked against its table (type, minimum, null), the options both
engines share, pass-through arguments, and where speculation may be configured."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from trt_gateway.config import ConfigError, SpeculativeConfig
from trt_gateway.executors.option_table import EngineOptions, OptionTable, PassThrough, check_speculation_source


@dataclass(frozen=True)
class DemoOptions(EngineOptions):
    ratio: float = 0.5
    limit: int | None = None
    modules: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    TABLE: ClassVar[OptionTable] = EngineOptions.TABLE.extend(
        executor="demo",
        types={"ratio": (int, float), "limit": (int,), "modules": (list, tuple), "extra": (Mapping,)},
        minimum={"limit": 1},
        nullable=frozenset({"limit"}),
        string_lists={"modules": "module names"},
    )


def test_values_are_normalised() -> None:
    opts = DemoOptions.parse({"ratio": 1, "modules": ["q_proj"], "extra": {"a": 1}, "tensor_parallel_size": 2})
    assert opts.ratio == 1.0 and isinstance(opts.ratio, float)  # (int, float) reads as float
    assert opts.modules == ("q_proj",)
    assert opts.extra == {"a": 1} and opts.tensor_parallel_size == 2
    assert DemoOptions.parse({}) == DemoOptions()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"nope": 1}, r"executor.options.nope: unknown demo option; known: dtype, enable_chunked_prefill, extra, "),
        ({"limit": 0}, r"executor.options.limit must be >= 1, got 0"),
        ({"tensor_parallel_size": None}, r"executor.options.tensor_parallel_size may not be null"),
        ({"tensor_parallel_size": True}, r"executor.options.tensor_parallel_size must be int, got bool True"),
        ({"trust_remote_code": 1}, r"executor.options.trust_remote_code must be bool, got int 1"),
        ({"modules": "q_proj"}, r"executor.options.modules must be list, got str 'q_proj'"),
        ({"modules": [1]}, r"executor.options.modules must be a list of module names"),
        ({"speculative": []}, r"executor.options.speculative must be table, got list"),
        ({"max_top_logprobs": -1}, r"executor.options.max_top_logprobs must be >= 0, got -1"),
    ],
)
def test_each_value_is_checked_and_named(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DemoOptions.parse(options)


def test_null_where_allowed() -> None:
    assert DemoOptions.parse({"limit": None, "tokenizer": None}).limit is None


def test_engine_arguments_leave_the_engine_defaults_alone() -> None:
    assert EngineOptions().engine_arguments() == {"tensor_parallel_size": 1}
    opts = EngineOptions(pipeline_parallel_size=2, dtype="bfloat16", tokenizer="tok", trust_remote_code=True,
                         enable_chunked_prefill=False, stream_interval=4)
    assert opts.engine_arguments() == {
        "tensor_parallel_size": 1, "pipeline_parallel_size": 2, "dtype": "bfloat16", "tokenizer": "tok",
        "trust_remote_code": True, "enable_chunked_prefill": False, "stream_interval": 4,
    }


def test_extended_tables_keep_the_shared_rules() -> None:
    shared = EngineOptions.TABLE
    assert set(shared.types) == {f.name for f in dataclasses.fields(EngineOptions)}
    assert set(shared.types) < set(DemoOptions.TABLE.types) and shared.nullable < DemoOptions.TABLE.nullable


def test_pass_through_refuses_what_the_schema_or_the_gateway_owns() -> None:
    extra = PassThrough(option="extra_args", owned=frozenset({"dtype"}), instead="a demo option",
                        forbidden={"skip_tokenizer_init": "the gateway needs the tokenizer"})
    extra.check({"some_engine_knob": 3})
    with pytest.raises(ConfigError, match=r"^executor.options.extra_args.dtype: set it as a demo option, not in "
                                          r"extra_args$"):
        extra.check({"dtype": "half"})
    with pytest.raises(ConfigError, match=r"^executor.options.extra_args.skip_tokenizer_init: the gateway needs"):
        extra.check({"skip_tokenizer_init": True})


def test_speculation_from_one_place_only() -> None:
    check_speculation_source(None, SpeculativeConfig(mode="ngram"))
    check_speculation_source({"method": "ngram"}, SpeculativeConfig())
    with pytest.raises(ConfigError, match=r"speculative and executor.speculative.mode \('ngram'\) are both set"):
        check_speculation_source({"method": "ngram"}, SpeculativeConfig(mode="ngram"))
