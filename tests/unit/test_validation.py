"""The one request check: the server's and the engine's checks give the same field and message for the same value."""

from __future__ import annotations

import dataclasses

import pytest

from trt_gateway import errors, validation
from trt_gateway.config import LimitsConfig
from trt_gateway.types import (
    Capabilities,
    GenerateRequest,
    GuidedDecoding,
    Prompt,
    ResponseOptions,
    SamplingParams,
    ServedModel,
    StoppingCriteria,
)

INFO = ServedModel("m", "echo", "0", 512, 100, (2,), Capabilities(logprobs=True, max_top_logprobs=5, guided=("regex",)))
LIMITS = LimitsConfig()


def request(**kw: object) -> GenerateRequest:
    return GenerateRequest(request_id="r", model="m", prompt=Prompt(token_ids=(5, 6)), **kw)  # type: ignore[arg-type]


def engine_check(r: GenerateRequest) -> None:
    validation.check_tokens(r, r.prompt.token_ids or (), vocab_size=100, max_model_len=512, max_top_logprobs=5)


@pytest.mark.parametrize(
    ("kw", "field", "words"),
    [
        ({"sampling": SamplingParams(temperature=-0.5)}, "sampling.temperature", "[0.0, 100.0]"),
        ({"sampling": SamplingParams(temperature=float("nan"))}, "sampling.temperature", "finite"),
        ({"sampling": SamplingParams(top_p=0.0)}, "sampling.top_p", "(0.0, 1.0]"),
        ({"sampling": SamplingParams(top_k=-1)}, "sampling.top_k", ">= 0"),
        ({"sampling": SamplingParams(repetition_penalty=0.0)}, "sampling.repetition_penalty", "(0.0, 10.0]"),
        ({"sampling": SamplingParams(logit_bias={3: 101.0})}, "sampling.logit_bias[3]", "[-100.0, 100.0]"),
        ({"stopping": StoppingCriteria(max_tokens=4, min_tokens=5)}, "stopping.min_tokens", "(5) must be <="),
        ({"stopping": StoppingCriteria(stop=("a", ""))}, "stopping.stop[1]", "must not be empty"),
        ({"guided": GuidedDecoding(regex="a", choice=("b",))}, "guided", "at most one of"),
        ({"priority": 5000}, "priority", "[-1000, 1000]"),
    ],
)
def test_server_and_engine_agree_on_values(kw: dict[str, object], field: str, words: str) -> None:
    r = request(**kw)
    with pytest.raises(errors.InvalidArgument) as server:
        validation.check_request(r, INFO, LIMITS)
    with pytest.raises(errors.InvalidArgument) as engine:
        engine_check(r)
    assert server.value.field == engine.value.field == field
    assert server.value.message == engine.value.message and words in server.value.message


@pytest.mark.parametrize(
    ("prompt_ids", "kw", "field"),
    [
        ((), {}, "token_ids"),  # the input the request set
        (tuple(range(1, 513)), {}, "token_ids"),  # no room for one output token
        ((5, 100), {}, "token_ids"),
        ((5,), {"stopping": StoppingCriteria(stop_token_ids=(100,))}, "stopping.stop_token_ids"),
        ((5,), {"response": ResponseOptions(logprobs=True, top_logprobs=6)}, "response.top_logprobs"),
    ],
)
def test_engine_bounds(prompt_ids: tuple[int, ...], kw: dict[str, object], field: str) -> None:
    r = request(**kw)
    with pytest.raises(errors.InvalidArgument) as err:
        validation.check_tokens(r, prompt_ids, vocab_size=100, max_model_len=512, max_top_logprobs=5)
    assert err.value.field == field


def test_server_limits_and_capabilities() -> None:
    with pytest.raises(errors.InvalidArgument, match=r"stopping.max_tokens must be in \[1, 512\]"):
        validation.check_request(request(stopping=StoppingCriteria(max_tokens=513)), INFO, LIMITS)
    with pytest.raises(errors.InvalidArgument, match="n must be <= 8"):
        validation.check_request(request(), INFO, LIMITS, n=9)
    with pytest.raises(errors.Unimplemented, match="guided decoding by json_schema"):
        validation.check_request(request(guided=GuidedDecoding(json_schema="{}")), INFO, LIMITS)
    with pytest.raises(errors.InvalidArgument, match="exactly one of text, token_ids or messages"):
        validation.check_request(dataclasses.replace(request(), prompt=Prompt(text="a", token_ids=(1,))), INFO, LIMITS)
    validation.check_request(request(guided=GuidedDecoding(regex="a+")), INFO, LIMITS)


def test_default_max_tokens_never_exceeds_the_context() -> None:
    small = dataclasses.replace(INFO, max_context_length=100)
    assert validation.default_max_tokens(INFO, LIMITS) == LIMITS.default_max_tokens == 256
    assert validation.default_max_tokens(small, LIMITS) == 100


def test_duplicate_id_is_one_status_everywhere() -> None:
    err = validation.duplicate_request_id("abc")
    assert isinstance(err, errors.AlreadyExists) and err.field == "request_id" and "'abc'" in err.message
