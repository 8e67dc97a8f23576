"""sampling_map and request_output: the SamplingParams keywords and the output shapes TensorRT-LLM and vLLM share."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from trt_gateway import errors
from trt_gateway.executors import request_output, sampling_map
from trt_gateway.executors.sampling_map import SHARED_FIELDS, SamplingMap
from trt_gateway.types import (
    FinishReason,
    GenerateRequest,
    GuidedDecoding,
    Prompt,
    SamplingParams,
    StoppingCriteria,
)

MAP = SamplingMap("demo", "DemoEngine", {**SHARED_FIELDS, "guided.regex": "guided", "guided.choice": "guided"})


def request(**kw: object) -> GenerateRequest:
    return GenerateRequest("r", "m", Prompt(text="hi"), **kw)  # type: ignore[arg-type]


def test_defaults_are_left_to_the_engine() -> None:
    values = {k: v for k, v in sampling_map.shared_values(request()).items() if v is not None}
    assert values == {"max_tokens": 256, "temperature": 1.0}  # max_tokens always: the engines' defaults differ


@pytest.mark.parametrize(("temperature", "sent"), [(1e-45, 0.0), (9.9e-6, 0.0), (0.0, 0.0), (1e-5, 1e-5), (0.7, 0.7)])
def test_a_temperature_below_the_greedy_epsilon_reaches_trtllm_and_vllm_as_greedy(temperature: float, sent: float) -> None:
    # TensorRT-LLM divides by what it is given; our greedy rule must not depend on each engine's own epsilon.
    values = sampling_map.shared_values(request(sampling=SamplingParams(temperature=temperature)))
    assert values["temperature"] == sent


def test_every_shared_keyword_comes_from_a_gateway_field() -> None:
    kw = sampling_map.shared_values(request(
        sampling=SamplingParams(temperature=0.5, top_p=0.9, top_k=5, min_p=0.1, repetition_penalty=1.1,
                                presence_penalty=0.2, frequency_penalty=0.3, seed=7),
        stopping=StoppingCriteria(max_tokens=9, min_tokens=2, stop=("x",), stop_token_ids=(3,), include_stop=True,
                                  ignore_eos=True),
    ))
    assert [k for k, v in kw.items() if v is None] == ["logit_bias"]  # every set field reaches its keyword
    assert set(kw) - {"logit_bias"} == set(SHARED_FIELDS.values()) - {"logprobs"}


def test_supported_drops_unset_values_and_names_the_field_an_engine_lacks() -> None:
    kw = {"temperature": 0.5, "top_p": None, "include_stop_str_in_output": True}
    assert MAP.supported(kw, frozenset({"temperature", "include_stop_str_in_output"}), None) == {
        "temperature": 0.5, "include_stop_str_in_output": True,
    }
    with pytest.raises(errors.Unimplemented) as info:
        MAP.supported(kw, frozenset({"temperature"}), None)
    assert info.value.field == "stopping.include_stop"
    assert info.value.message == ("stopping.include_stop: the demo executor does not support stopping.include_stop "
                                       "(this DemoEngine's SamplingParams has no 'include_stop_str_in_output')")


def test_the_guided_keyword_is_named_by_the_kind_asked_for() -> None:
    # vLLM's table holds a placeholder for the guided keyword, whose real name depends on the version
    with pytest.raises(errors.Unimplemented) as info:
        MAP.supported({"structured_outputs": {"regex": "a+"}}, frozenset(), "regex")
    assert info.value.field == "guided.regex"
    assert MAP.source("guided", "choice") == "guided.choice"
    assert MAP.source("logprobs", None) == "response.logprobs"


def test_top_logprobs_limit() -> None:
    sampling_map.check_top_logprobs(5, 5)
    with pytest.raises(errors.InvalidArgument, match="response.top_logprobs must be <= 5, got 6"):
        sampling_map.check_top_logprobs(6, 5)


@pytest.mark.parametrize(
    ("guided", "expected"),
    [
        (GuidedDecoding(json_schema="{}"), {"json": "{}"}),
        (GuidedDecoding(regex="a+"), {"regex": "a+"}),
        (GuidedDecoding(grammar="root ::= 'a'"), {"grammar": "root ::= 'a'"}),
        (GuidedDecoding(choice=("yes", "no")), {"choice": ["yes", "no"]}),
    ],
)
def test_guided_params(guided: GuidedDecoding, expected: dict) -> None:
    assert sampling_map.guided_params(guided) == expected


# -- request_output ------------------------------------------------------------------------------------------------


def completion(reason: str, stop: object = None) -> SimpleNamespace:
    return SimpleNamespace(finish_reason=reason, stop_reason=stop)


def test_finish_reasons_both_engines_share() -> None:
    assert request_output.finish_reason(completion("length"), 9) == (FinishReason.LENGTH, "", None)
    assert request_output.finish_reason(completion("stop", "END"), 9) == (FinishReason.STOP_STRING, "END", None)
    assert request_output.finish_reason(completion("stop", 42), 9) == (FinishReason.STOP_TOKEN, "", 42)
    assert request_output.finish_reason(completion("stop"), 9) == (FinishReason.STOP_TOKEN, "", 9)  # EOS: last token
    assert request_output.finish_reason(completion("abort"), 9) is None  # the engine's own reasons: its executor's


def lp(value: float, rank: int | None, decoded: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(logprob=value, rank=rank, decoded_token=decoded)


def test_logprobs_ranked_with_the_sampled_token_looked_up_by_id() -> None:
    entries = [{5: lp(-0.1, 1), 7: lp(-2.0, 3), 6: lp(-1.0, 2)}, {8: lp(-0.5, 1, "x")}]
    out = request_output.logprobs(entries, [7, 9], 2, token_text=lambda t: f"<{t}>")
    assert [(t.token_id, t.logprob) for t in out[0].top] == [(5, -0.1), (6, -1.0)]
    assert (out[0].token_id, out[0].token, out[0].logprob) == (7, "<7>", -2.0)
    assert out[1].token_id == 9 and math.isnan(out[1].logprob)  # the engine left the sampled token out
    assert out[1].top[0].token == "x"  # vLLM's decoded_token, where it gives one


def test_tensorrt_backend_logprobs_are_bare_floats() -> None:
    out = request_output.logprobs([-0.25], [4], 0, token_text=str)
    assert (out[0].token_id, out[0].token, out[0].logprob, out[0].top) == (4, "4", -0.25, ())


def test_prompt_info() -> None:
    out = SimpleNamespace(prompt_token_ids=[1, 2, 3], prompt=None)
    info = request_output.prompt_info(out, want_ids=True, want_text=True, decode=lambda ids: "abc")
    assert (info.num_tokens, info.token_ids, info.text) == (3, (1, 2, 3), "abc")
    out = SimpleNamespace(prompt_token_ids=[1, 2], prompt="hi")
    info = request_output.prompt_info(out, want_ids=False, want_text=True, decode=lambda ids: "unused")
    assert (info.num_tokens, info.token_ids, info.text) == (2, (), "hi")
