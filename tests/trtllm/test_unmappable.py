"""Every gateway field that cannot be mapped onto SamplingParams / the LLM is refused with UNIMPLEMENTED naming it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from trtllm_helpers import collect, req, started, write_model

from trt_gateway import errors
from trt_gateway.executors.trtllm.params import FIELD_MAP, UNMAPPABLE
from trt_gateway.types import GuidedDecoding, ResponseOptions, SamplingParams, SpeculativeOptions

EAGLE = {"decoding_type": "Eagle3", "max_draft_len": 4}


def spec_options(tmp_path: Path) -> dict[str, Any]:
    return {"speculative": {**EAGLE, "speculative_model_dir": write_model(tmp_path / "draft")}}


CASES: list[tuple[str, str, dict[str, Any]]] = [
    # (field named in the error, which options the executor runs with, request fields)
    ("sampling.logit_bias", "plain", {"sampling": SamplingParams(logit_bias={5: 1.0})}),
    ("speculative.disable", "spec", {"speculative": SpeculativeOptions(enabled=False)}),
    ("speculative.num_draft_tokens", "spec", {"speculative": SpeculativeOptions(num_draft_tokens=2)}),
    ("guided.json_schema", "plain", {"guided": GuidedDecoding(json_schema="{}")}),
    ("guided.regex", "plain", {"guided": GuidedDecoding(regex="a+")}),
    ("guided.grammar", "plain", {"guided": GuidedDecoding(grammar='root ::= "a"')}),
    ("guided.choice", "plain", {"guided": GuidedDecoding(choice=("a", "b"))}),
    ("response.logprobs", "trt", {"response": ResponseOptions(logprobs=True)}),
    ("adapter", "plain", {"adapter": "sql"}),
]


@pytest.mark.parametrize(("field", "setup", "fields"), CASES, ids=[c[0] for c in CASES])
async def test_unmappable_field_is_unimplemented(model_dir: str, tmp_path: Path, control: Any, field: str,
                                                 setup: str, fields: dict[str, Any]) -> None:
    options = {"plain": {}, "spec": spec_options(tmp_path), "trt": {"backend": "tensorrt"}}[setup]
    executor = await started(model_dir, options=options)
    with pytest.raises(errors.Unimplemented) as err:
        await collect(executor, req(**fields))
    assert err.value.field == field and field in err.value.message
    assert control.submissions == []  # refused before TensorRT-LLM saw it


async def test_missing_sampling_params_field_is_unimplemented(model_dir: str, control: Any) -> None:
    """Feature detection: a SamplingParams without `min_p` makes sampling.min_p UNIMPLEMENTED, not ignored."""
    executor = await started(model_dir)
    executor.api = dataclasses.replace(executor.api, sampling_fields=executor.api.sampling_fields - {"min_p"})
    executor._info = None
    executor._info = executor._model_info()
    assert executor.models()[0].capabilities.min_p is False
    with pytest.raises(errors.Unimplemented) as err:
        await collect(executor, req(sampling=SamplingParams(min_p=0.1)))
    assert err.value.field == "sampling.min_p"
    await collect(executor, req())  # without min_p the request goes through


async def test_no_op_speculative_fields_are_accepted(model_dir: str, tmp_path: Path, control: Any) -> None:
    plain = await started(model_dir)
    await collect(plain, req(speculative=SpeculativeOptions(enabled=False, num_draft_tokens=2)))  # nothing to turn off
    spec = await started(model_dir, options=spec_options(tmp_path))
    await collect(spec, req(speculative=SpeculativeOptions(num_draft_tokens=4), request_id="r2"))  # = max_draft_len
    assert len(control.submissions) == 2


async def test_top_logprobs_limit(model_dir: str) -> None:
    executor = await started(model_dir, options={"max_top_logprobs": 3})
    with pytest.raises(errors.InvalidArgument) as err:
        await collect(executor, req(response=ResponseOptions(logprobs=True, top_logprobs=4)))
    assert err.value.field == "response.top_logprobs"


def test_every_gateway_field_is_mapped_or_refused() -> None:
    """The mapping table covers every sampling/stopping/response/guided field of the gateway's request types."""
    from trt_gateway import types as t

    groups = {"sampling": t.SamplingParams, "stopping": t.StoppingCriteria, "response": t.ResponseOptions,
              "guided": t.GuidedDecoding}
    # read from RequestOutput (no SamplingParams field), or handled by the server before the executor
    elsewhere = {"response.prompt_token_ids", "response.echo", "response.queue_position"}
    for group, cls in groups.items():
        for f in dataclasses.fields(cls):
            name = f"{group}.{f.name}"
            assert name in FIELD_MAP or name in UNMAPPABLE or name in elsewhere, name
