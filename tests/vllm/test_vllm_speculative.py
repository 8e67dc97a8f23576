"""Speculative decoding: every method becomes AsyncEngineArgs(speculative_config=...), is reported, and is counted in
the engine statistics; what vLLM cannot do per request is refused."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
from vllm_helpers import collect, executor_config, ids_of, req, started, write_model

from trt_gateway import errors
from trt_gateway.config import ConfigError
from trt_gateway.executors.vllm import VllmExecutor
from trt_gateway.types import SpeculativeOptions, StoppingCriteria


@pytest.fixture
def draft_dir(tmp_path: Path) -> str:
    return write_model(tmp_path / "draft", num_lookahead_tokens=3)


def cases(draft: str) -> list[tuple[dict[str, Any], str, int]]:
    """(options.speculative, capability, draft tokens)"""
    return [
        ({"method": "eagle3", "model": draft, "num_speculative_tokens": 4}, "eagle3", 4),
        ({"method": "eagle", "model": draft, "num_speculative_tokens": 2}, "eagle", 2),
        ({"method": "eagle3", "model": draft}, "eagle3", 0),  # vLLM reads the length from the draft config
        ({"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_max": 3}, "ngram", 5),
        ({"method": "draft_model", "model": draft, "num_speculative_tokens": 3, "draft_tensor_parallel_size": 1},
         "draft", 3),
        ({"method": "deepseek_mtp", "num_speculative_tokens": 1}, "mtp", 1),
        ({"method": "suffix", "num_speculative_tokens": 8}, "suffix", 8),
        ({"model": "[ngram]", "num_speculative_tokens": 2}, "ngram", 2),  # the old spelling
    ]


@pytest.mark.parametrize("index", range(8))
async def test_each_speculative_method(model_dir: str, draft_dir: str, control: Any, index: int) -> None:
    spec, capability, draft_tokens = cases(draft_dir)[index]
    executor = await started(model_dir, options={"speculative": spec})
    passed = control.engine_args[-1].speculative_config
    assert passed == executor.engine_kwargs["speculative_config"]
    assert passed["method"] in {"ngram", "eagle", "eagle3", "draft_model", "mtp", "suffix"}  # vLLM's own names
    assert control.engines[-1].vllm_config.speculative_config is not None  # vLLM accepted it
    caps = executor.models()[0].capabilities
    assert (caps.speculative, caps.num_draft_tokens) == (capability, draft_tokens)


async def test_gateway_flags(model_dir: str, draft_dir: str, control: Any) -> None:
    await started(model_dir, speculative={"mode": "ngram", "num_draft_tokens": 3})
    assert control.engine_args[-1].speculative_config == {
        "method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 4, "prompt_lookup_min": 1}
    draft = await started(model_dir, speculative={"mode": "draft", "draft_model": draft_dir, "num_draft_tokens": 2})
    assert control.engine_args[-1].speculative_config == {
        "method": "draft_model", "model": draft_dir, "num_speculative_tokens": 2}
    assert draft.models()[0].capabilities.speculative == "draft"


async def test_accepted_drafts_arrive_together_and_are_counted(model_dir: str, control: Any) -> None:
    executor = await started(model_dir, options={"speculative": {"method": "ngram", "num_speculative_tokens": 3}})
    control.accepted_per_step = 2
    deltas = await collect(executor, req("abcdefgh", stopping=StoppingCriteria(max_tokens=6)))
    assert [len(d.token_ids) for d in deltas] == [3, 3]  # 1 + 2 accepted per step
    assert ids_of(deltas) == [ord(c) + 3 for c in "abcdef"]
    usage = deltas[-1].finish.usage  # type: ignore[union-attr]
    assert (usage.draft_tokens, usage.accepted_tokens) == (0, 0)  # vLLM has no per-request counts
    assert executor.stats.latest["spec_decode_draft_tokens"] == 6
    assert executor.stats.latest["spec_decode_accepted_tokens"] == 4


async def test_per_request_opt_out_is_unimplemented(model_dir: str, draft_dir: str, control: Any) -> None:
    executor = await started(model_dir, options={"speculative": {"method": "eagle3", "model": draft_dir,
                                                                 "num_speculative_tokens": 4}})
    with pytest.raises(errors.Unimplemented) as err:
        await collect(executor, req(speculative=SpeculativeOptions(enabled=False)))
    assert err.value.field == "speculative.disable" and "every request" in err.value.message
    with pytest.raises(errors.Unimplemented) as err:
        await collect(executor, req(speculative=SpeculativeOptions(num_draft_tokens=2)))
    assert err.value.field == "speculative.num_draft_tokens"
    await collect(executor, req(speculative=SpeculativeOptions(num_draft_tokens=4)))  # = the configured length
    assert len(control.submissions) == 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"num_speculative_tokens": 3}, "method is required"),
        ({"method": "lookahead", "num_speculative_tokens": 3}, "no speculative method 'lookahead'"),
        ({"method": "ngram"}, "num_speculative_tokens is required"),
        ({"method": "ngram", "num_speculative_tokens": 0}, "must be > 0"),
        ({"method": "eagle3", "num_speculative_tokens": 3}, "model is required"),
        ({"method": "eagle3", "model": "/no/such/dir"}, "no such directory"),
        ({"method": "ngram", "num_speculative_tokens": 2, "max_draft_len": 2}, "has no such field"),
    ],
)
def test_bad_speculative_configs(model_dir: str, spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        VllmExecutor.from_config(executor_config(model_dir, options={"speculative": spec}))


def test_both_speculative_sources_is_an_error(model_dir: str) -> None:
    with pytest.raises(ConfigError, match="both set"):
        VllmExecutor.from_config(executor_config(model_dir, options={"speculative": {"method": "ngram"}},
                                                 speculative={"mode": "ngram"}))


def test_draft_model_on_a_vllm_without_it(model_dir: str, draft_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Feature detection: vLLM's v1 engine had no draft-model speculation at first; the error says what to use."""
    import vllm.config.speculative as speculative

    monkeypatch.setattr(speculative, "SpeculativeMethod", typing.Literal["ngram", "eagle", "eagle3", "medusa"])
    with pytest.raises(ConfigError, match="executor.speculative.method.*draft_model.*'eagle3'"):
        VllmExecutor.from_config(executor_config(model_dir, speculative={"mode": "draft", "draft_model": draft_dir}))
