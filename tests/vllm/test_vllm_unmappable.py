"""Guided decoding through vLLM's structured-output params (new and old class), and every gateway field that cannot be
mapped refused with UNIMPLEMENTED naming it, before vLLM sees the request."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import vllm
import vllm.sampling_params as sampling_params
from vllm import _legacy
from vllm.sampling_params import StructuredOutputsParams
from vllm_helpers import collect, executor_config, req, started, write_model

from trt_gateway import errors
from trt_gateway.executors.vllm import VllmExecutor
from trt_gateway.executors.vllm.params import CONDITIONAL, FIELD_MAP
from trt_gateway.types import GuidedDecoding, SamplingParams, SpeculativeOptions

GUIDED = [
    (GuidedDecoding(json_schema='{"type": "object"}'), {"json": '{"type": "object"}'}),
    (GuidedDecoding(regex="a+b"), {"regex": "a+b"}),
    (GuidedDecoding(grammar='root ::= "a"'), {"grammar": 'root ::= "a"'}),
    (GuidedDecoding(choice=("yes", "no (maybe)")), {"choice": ["yes", "no (maybe)"]}),
]


@pytest.mark.parametrize(("guided", "expected"), GUIDED, ids=[g[0].kind for g in GUIDED])
async def test_guided_decoding_uses_structured_outputs(model_dir: str, control: Any, guided: GuidedDecoding,
                                                       expected: dict[str, Any]) -> None:
    executor = await started(model_dir)
    await collect(executor, req(guided=guided))
    params = control.submissions[-1]["params"].structured_outputs
    assert isinstance(params, StructuredOutputsParams)
    assert {k: v for k, v in dataclasses.asdict(params).items() if v not in (None, False)} == expected


async def test_older_vllm_gets_guided_decoding_params(model_dir: str, control: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Feature detection: before StructuredOutputsParams, SamplingParams(guided_decoding=GuidedDecodingParams(...))."""
    monkeypatch.delattr(sampling_params, "StructuredOutputsParams")
    monkeypatch.setattr(sampling_params, "GuidedDecodingParams", _legacy.GuidedDecodingParams, raising=False)
    monkeypatch.setattr(sampling_params, "SamplingParams", _legacy.LegacySamplingParams)
    monkeypatch.setattr(vllm, "SamplingParams", _legacy.LegacySamplingParams)
    executor = await started(model_dir)
    assert executor.api.guided_field == "guided_decoding"
    await collect(executor, req(guided=GuidedDecoding(regex="a+")))
    params = control.submissions[-1]["params"]
    assert isinstance(params.guided_decoding, _legacy.GuidedDecodingParams) and params.guided_decoding.regex == "a+"


async def test_a_vllm_without_structured_outputs(model_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(sampling_params, "StructuredOutputsParams")
    executor = await started(model_dir)
    assert executor.models()[0].capabilities.guided == ()
    with pytest.raises(errors.Unimplemented) as err:
        await collect(executor, req(guided=GuidedDecoding(json_schema="{}")))
    assert err.value.field == "guided.json_schema"


def spec_options(tmp_path: Path) -> dict[str, Any]:
    return {"speculative": {"method": "eagle3", "model": write_model(tmp_path / "draft"), "num_speculative_tokens": 4}}


CASES: list[tuple[str, str, dict[str, Any]]] = [
    # (field named in the error, which options the executor runs with, request fields)
    ("speculative.disable", "spec", {"speculative": SpeculativeOptions(enabled=False)}),
    ("speculative.num_draft_tokens", "spec", {"speculative": SpeculativeOptions(num_draft_tokens=2)}),
    ("sampling.min_p", "spec", {"sampling": SamplingParams(min_p=0.1)}),
    ("sampling.logit_bias", "spec", {"sampling": SamplingParams(logit_bias={5: 1.0})}),
    ("guided.json_schema", "no-guided", {"guided": GuidedDecoding(json_schema="{}")}),
    ("guided.regex", "no-guided", {"guided": GuidedDecoding(regex="a+")}),
    ("guided.grammar", "no-guided", {"guided": GuidedDecoding(grammar='root ::= "a"')}),
    ("guided.choice", "no-guided", {"guided": GuidedDecoding(choice=("a", "b"))}),
    ("adapter", "plain", {"adapter": "sql"}),
]


@pytest.mark.parametrize(("field", "setup", "fields"), CASES, ids=[c[0] for c in CASES])
async def test_unmappable_field_is_unimplemented(model_dir: str, tmp_path: Path, control: Any, field: str,
                                                 setup: str, fields: dict[str, Any]) -> None:
    options = {"plain": {}, "spec": spec_options(tmp_path), "no-guided": {"guided_decoding_backend": None}}[setup]
    executor = await started(model_dir, options=options)
    with pytest.raises(errors.Unimplemented) as err:
        await collect(executor, req(**fields))
    assert err.value.field == field and field in err.value.message
    assert control.submissions == []  # refused before vLLM saw it


async def test_a_sampling_field_this_vllm_lacks_is_unimplemented(model_dir: str, control: Any) -> None:
    """Feature detection: a SamplingParams without `logit_bias` makes sampling.logit_bias UNIMPLEMENTED."""
    executor = VllmExecutor.from_config(executor_config(model_dir))
    executor.api = dataclasses.replace(executor.api, sampling_fields=executor.api.sampling_fields - {"logit_bias"})
    await executor.start()
    assert executor.models()[0].capabilities.logit_bias is False
    with pytest.raises(errors.Unimplemented) as err:
        await collect(executor, req(sampling=SamplingParams(logit_bias={5: 1.0})))
    assert err.value.field == "sampling.logit_bias"
    await collect(executor, req())  # without it the request goes through


async def test_no_op_speculative_fields_are_accepted(model_dir: str, control: Any) -> None:
    plain = await started(model_dir)
    await collect(plain, req(speculative=SpeculativeOptions(enabled=False, num_draft_tokens=2)))  # nothing to turn off
    assert len(control.submissions) == 1


async def test_top_logprobs_limit(model_dir: str) -> None:
    executor = await started(model_dir, options={"max_top_logprobs": 3})
    from trt_gateway.types import ResponseOptions

    with pytest.raises(errors.InvalidArgument) as err:
        await collect(executor, req(response=ResponseOptions(logprobs=True, top_logprobs=4)))
    assert err.value.field == "response.top_logprobs"


def test_every_gateway_field_is_mapped_or_refused() -> None:
    """The mapping table covers every sampling/stopping/response/guided/speculative field of the request types."""
    from trt_gateway import types as t

    groups = {"sampling": t.SamplingParams, "stopping": t.StoppingCriteria, "response": t.ResponseOptions,
              "guided": t.GuidedDecoding}
    # read from RequestOutput (no SamplingParams field), or handled by the server before the executor
    elsewhere = {"response.prompt_token_ids", "response.echo", "response.queue_position"}
    for group, cls in groups.items():
        for f in dataclasses.fields(cls):
            name = f"{group}.{f.name}"
            assert name in FIELD_MAP or name in elsewhere, name
    assert {f"speculative.{f.name}" for f in dataclasses.fields(t.SpeculativeOptions)} == {
        "speculative.enabled", "speculative.num_draft_tokens"}
    assert set(CONDITIONAL) == {"speculative.disable", "speculative.num_draft_tokens", "sampling.min_p",
                                "sampling.logit_bias"}


async def test_speculative_engines_report_no_min_p_or_logit_bias(model_dir: str, tmp_path: Path,
                                                                 control: Any) -> None:
    """vLLM 0.26 rejects min_p and logit_bias when the engine speculates; the capabilities say so up front."""
    caps = (await started(model_dir, options=spec_options(tmp_path))).models()[0].capabilities
    assert not caps.min_p and not caps.logit_bias
    plain = (await started(model_dir)).models()[0].capabilities
    assert plain.min_p and plain.logit_bias
