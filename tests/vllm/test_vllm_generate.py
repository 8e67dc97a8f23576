"""What is particular to the vllm executor over the double, no server: parameter mapping, multi-token steps (EOS kept in
token_ids), the engine stopping at a stop string, logprob shapes, prompts as submitted, prefix-cache usage, merged
deltas, priority and vLLM's errors. What every executor must do alike is in tests/executors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from vllm import _fake
from vllm.sampling_params import RequestOutputKind
from vllm_helpers import collect, ids_of, req, started, text_of

from trt_gateway import errors
from trt_gateway.executors.base import Health
from trt_gateway.types import (
    ChatMessage,
    FinishReason,
    Prompt,
    ResponseOptions,
    SamplingParams,
    StoppingCriteria,
)

enc = _fake.encode


@pytest.fixture
async def executor(model_dir: str) -> Any:
    return await started(model_dir)


async def test_model_info(executor: Any) -> None:
    (info,) = executor.models()
    assert (info.name, info.executor, info.max_context_length, info.vocab_size) == ("tiny-llama", "vllm", 512, 259)
    assert info.eos_token_ids == (2,) and info.executor_version == "vllm 0.26.0+double"
    caps = info.capabilities
    assert caps.logprobs and caps.max_top_logprobs == 20 and caps.chat_template and caps.tokenize
    assert caps.min_p and caps.logit_bias and caps.guided == ("json_schema", "regex", "grammar", "choice")
    assert not caps.lora and caps.speculative == ""
    assert executor.health() is Health.SERVING


async def test_multi_token_steps_including_the_final_one(executor: Any, control: Any) -> None:
    control.script = [enc("Hel"), enc("lo"), [*enc(" you"), _fake.EOS]]  # last step: content and EOS together
    deltas = await collect(executor, req())
    assert [d.text for d in deltas] == ["Hel", "lo", " you"]
    assert [len(d.token_ids) for d in deltas] == [3, 2, 5]  # vLLM keeps EOS in token_ids, not in the text
    last = deltas[-1].finish
    assert last is not None and last.reason is FinishReason.STOP_TOKEN and last.matched_stop_token_id == _fake.EOS
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (6, 10)  # BOS + "hello"
    assert all(d.finish is None for d in deltas[:-1])
    sub = control.submissions[-1]
    assert sub["prompt"] == "hello" and sub["request_id"] == "r1"
    assert sub["params"].output_kind is RequestOutputKind.DELTA and sub["params"].n == 1


async def test_sampling_params_mapping(executor: Any, control: Any) -> None:
    sampling = SamplingParams(temperature=0.7, top_p=0.9, top_k=40, min_p=0.05, repetition_penalty=1.1,
                              presence_penalty=0.5, frequency_penalty=-0.5, seed=7, logit_bias={65: 2.0})
    stopping = StoppingCriteria(max_tokens=3, min_tokens=1, stop=("zz",), stop_token_ids=(250,), ignore_eos=True,
                                include_stop=True)
    deltas = await collect(executor, req("abcdef", sampling=sampling, stopping=stopping))
    assert text_of(deltas) == "abc" and deltas[-1].finish.reason is FinishReason.LENGTH  # type: ignore[union-attr]
    sp = control.submissions[-1]["params"]
    assert (sp.temperature, sp.top_p, sp.top_k, sp.min_p, sp.seed) == (0.7, 0.9, 40, 0.05, 7)
    assert (sp.repetition_penalty, sp.presence_penalty, sp.frequency_penalty) == (1.1, 0.5, -0.5)
    assert (sp.max_tokens, sp.min_tokens, sp.stop, sp.stop_token_ids) == (3, 1, ["zz"], [250])
    assert sp.ignore_eos is True and sp.include_stop_str_in_output is True and sp.logprobs is None
    assert sp.logit_bias == {65: 2.0} and sp.structured_outputs is None


async def test_defaults_leave_vllm_knobs_off(executor: Any, control: Any) -> None:
    await collect(executor, req("ab"))
    sp = control.submissions[-1]["params"]
    assert (sp.top_p, sp.top_k, sp.min_p, sp.repetition_penalty, sp.seed) == (1.0, 0, 0.0, 1.0, None)
    assert sp.max_tokens == 256  # the gateway's default, not vLLM's 16


async def test_stop_string_is_held_back_and_cut(executor: Any, control: Any) -> None:
    control.script = [enc("ab#"), enc("#"), enc("#cd"), enc("ef")]
    deltas = await collect(executor, req(stopping=StoppingCriteria(stop=("###",))))
    assert text_of(deltas) == "ab" and all("#" not in d.text for d in deltas)
    finish = deltas[-1].finish
    assert finish is not None and (finish.reason, finish.matched_stop) == (FinishReason.STOP_STRING, "###")
    assert not control.engines[-1].engine_core.requests  # the engine stopped generating at the stop string


async def test_logprobs_and_top_logprobs(executor: Any, control: Any) -> None:
    deltas = await collect(executor, req("ab", response=ResponseOptions(logprobs=True, top_logprobs=3)))
    assert control.submissions[-1]["params"].logprobs == 3
    lps = [lp for d in deltas for lp in d.logprobs]
    assert [lp.token_id for lp in lps] == ids_of(deltas)
    first = lps[0]
    assert (first.token, first.logprob) == ("a", -0.25) and len(first.top) == 3
    assert first.top[0].token_id == first.token_id and [t.logprob for t in first.top] == [-0.25, -1.0, -2.25]


async def test_logprobs_of_the_sampled_token_only(executor: Any, control: Any) -> None:
    deltas = await collect(executor, req("ab", response=ResponseOptions(logprobs=True)))
    assert control.submissions[-1]["params"].logprobs == 0
    assert all(lp.top == () for d in deltas for lp in d.logprobs) and len(deltas[0].logprobs) == 1


async def test_token_id_and_chat_prompts(executor: Any, control: Any) -> None:
    await collect(executor, req(prompt=Prompt(token_ids=(5, 6, 7))))
    assert control.submissions[-1]["prompt"] == {"prompt_token_ids": [5, 6, 7]}
    messages = (ChatMessage("user", "hi"),)
    deltas = await collect(executor, req(prompt=Prompt(messages=messages), request_id="r2"))
    assert control.submissions[-1]["prompt"] == {"prompt_token_ids": enc("user: hi\nassistant: ")}
    assert text_of(deltas) == "user: hi\nassistant: "


async def test_tokenize(executor: Any) -> None:
    assert await executor.tokenize("tiny-llama", text="ab") == [_fake.BOS, *enc("ab")]
    assert await executor.tokenize("tiny-llama", text="ab", add_special_tokens=False) == enc("ab")
    assert await executor.tokenize("tiny-llama", messages=[ChatMessage("user", "x")]) == enc("user: x\nassistant: ")
    with pytest.raises(errors.NotFound):
        await executor.tokenize("other", text="x")


async def test_cached_tokens_from_the_prefix_cache(executor: Any) -> None:
    prompt = "x" * 40
    first = await collect(executor, req(prompt, stopping=StoppingCriteria(max_tokens=1)))
    second = await collect(executor, req(prompt + "y", request_id="r2", stopping=StoppingCriteria(max_tokens=1)))
    assert first[-1].finish.usage.cached_tokens == 0  # type: ignore[union-attr]
    assert second[-1].finish.usage.cached_tokens == 32  # type: ignore[union-attr]  # two whole blocks of 16


async def test_a_lagging_consumer_gets_merged_deltas(executor: Any, control: Any) -> None:
    control.script = [enc("a"), enc("b"), enc("c"), [_fake.EOS]]
    stream = executor.generate(req())
    first = await stream.__anext__()
    await asyncio.sleep(0.05)  # the engine runs ahead; vLLM's collector merges what queued up
    rest = [d async for d in stream]
    assert first.text == "a" and len(rest) == 1 and rest[0].text == "bc" and rest[0].finish is not None


async def test_concurrent_requests_do_not_mix(executor: Any) -> None:
    outs = await asyncio.gather(*(collect(executor, req(t, request_id=t)) for t in ("one", "two", "three")))
    assert [text_of(o) for o in outs] == ["one", "two", "three"]


async def test_priority_is_passed_only_with_priority_scheduling(model_dir: str, control: Any) -> None:
    fcfs = await started(model_dir)
    await collect(fcfs, req(priority=5))
    assert control.submissions[-1]["priority"] == 0  # FCFS vLLM ignores (0.26) or refuses them
    prio = await started(model_dir, options={"scheduling_policy": "priority"})
    await collect(prio, req(priority=5, request_id="p"))
    assert control.submissions[-1]["priority"] == -5  # vLLM runs lower values first


async def test_request_errors(executor: Any, control: Any) -> None:
    with pytest.raises(errors.NotFound):
        await collect(executor, req(model="other"))
    with pytest.raises(errors.InvalidArgument, match="longer than the maximum model length"):
        await collect(executor, req("x" * 600))
    with pytest.raises(errors.InvalidArgument, match="out of vocabulary"):
        await collect(executor, req(prompt=Prompt(token_ids=(1, 999))))
    with pytest.raises(errors.InvalidArgument, match="top_p"):
        await collect(executor, req(sampling=SamplingParams(top_p=1.5)))
    control.fail_requests.add("bad")
    with pytest.raises(errors.Internal, match="scripted failure"):
        await collect(executor, req(request_id="bad"))
    control.error_finish_requests.add("err")
    with pytest.raises(errors.Unavailable, match="retryable"):
        await collect(executor, req(request_id="err"))
    assert executor.health() is Health.SERVING and not executor._requests
    assert len(await collect(executor, req(request_id="ok"))) > 1  # the engine still serves


async def test_shutdown(executor: Any, control: Any) -> None:
    await executor.shutdown()
    assert control.engines[-1].errored and executor.engine is None
    assert executor.health() is Health.STARTING
