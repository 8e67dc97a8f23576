"""What is particular to the trtllm executor over the double, no server: parameter mapping, multi-token steps, stop
strings TensorRT-LLM truncates after the fact, logprob shapes, prompts as submitted, errors, aborts reaching
TensorRT-LLM. What every executor must do alike is in tests/executors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tensorrt_llm import _fake
from trtllm_helpers import collect, req, started, text_of

from trt_gateway import errors
from trt_gateway.executors.base import Health
from trt_gateway.types import ChatMessage, FinishReason, Prompt, ResponseOptions, StoppingCriteria

enc = _fake.encode


@pytest.fixture
async def executor(model_dir: str) -> Any:
    return await started(model_dir)


async def test_model_info(executor: Any) -> None:
    (info,) = executor.models()
    assert (info.name, info.executor, info.max_context_length, info.vocab_size) == ("tiny-llama", "trtllm", 512, 259)
    assert info.eos_token_ids == (2,) and info.executor_version == "tensorrt_llm 1.2.0+double"
    caps = info.capabilities
    assert caps.logprobs and caps.chat_template and caps.tokenize and caps.min_p and not caps.logit_bias
    assert not caps.lora and caps.speculative == "" and caps.guided == ()
    assert executor.health() is Health.SERVING


async def test_multi_token_steps_including_the_final_one(executor: Any, control: Any) -> None:
    control.script = [enc("Hel"), enc("lo"), [*enc(" you"), _fake.EOS]]  # last step: content and EOS together
    deltas = await collect(executor, req())
    assert [d.text for d in deltas] == ["Hel", "lo", " you"]
    assert [len(d.token_ids) for d in deltas] == [3, 2, 4]
    last = deltas[-1].finish
    assert last is not None and last.reason is FinishReason.STOP_TOKEN and last.matched_stop_token_id is None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (6, 9)  # BOS + "hello"
    assert all(d.finish is None for d in deltas[:-1])
    sub = control.submissions[-1]
    assert sub["streaming"] is True and sub["inputs"] == "hello"


async def test_length_and_sampling_params_mapping(executor: Any, control: Any) -> None:
    from trt_gateway.types import SamplingParams

    sampling = SamplingParams(temperature=0.7, top_p=0.9, top_k=40, min_p=0.05, repetition_penalty=1.1,
                              presence_penalty=0.5, frequency_penalty=-0.5, seed=7)
    stopping = StoppingCriteria(max_tokens=3, min_tokens=1, stop=("zz",), stop_token_ids=(250,), ignore_eos=True,
                                include_stop=True)
    deltas = await collect(executor, req("abcdef", sampling=sampling, stopping=stopping))
    assert text_of(deltas) == "abc" and deltas[-1].finish.reason is FinishReason.LENGTH  # type: ignore[union-attr]
    sp = control.submissions[-1]["sampling_params"]
    assert (sp.temperature, sp.top_p, sp.top_k, sp.min_p, sp.seed) == (0.7, 0.9, 40, 0.05, 7)
    assert (sp.repetition_penalty, sp.presence_penalty, sp.frequency_penalty) == (1.1, 0.5, -0.5)
    assert (sp.max_tokens, sp.min_tokens, sp.stop, sp.stop_token_ids) == (3, 1, ["zz"], [250])
    assert sp.ignore_eos is True and sp.include_stop_str_in_output is True and sp.logprobs is None


async def test_defaults_leave_tensorrt_llm_defaults(executor: Any, control: Any) -> None:
    await collect(executor, req())
    sp = control.submissions[-1]["sampling_params"]
    assert sp.max_tokens == 256  # always explicit (TensorRT-LLM's own default is 32)
    assert (sp.top_p, sp.top_k, sp.min_p, sp.repetition_penalty, sp.stop, sp.seed) == (None,) * 6
    assert sp.temperature == 1.0


@pytest.mark.parametrize("include", [False, True])
async def test_stop_string_split_across_steps_never_leaks(executor: Any, control: Any, include: bool) -> None:
    # "lo" arrives first (a possible start of the stop), then " wor": the double, like TensorRT-LLM, truncates its
    # cumulative text after the fact, so its text_diff alone would have leaked "lo".
    control.script = [enc("hel"), enc("lo"), enc(" world"), [_fake.EOS]]
    deltas = await collect(executor, req(stopping=StoppingCriteria(stop=("lo w",), include_stop=include)))
    assert "".join(d.text for d in deltas[:-1]) == "hel"  # "lo" was held back: it could start the stop
    assert text_of(deltas) == ("hello w" if include else "hel")
    finish = deltas[-1].finish
    assert finish is not None and finish.reason is FinishReason.STOP_STRING and finish.matched_stop == "lo w"


async def test_logprobs_top_n(executor: Any, control: Any) -> None:
    control.script = [enc("ab"), [_fake.EOS]]
    deltas = await collect(executor, req(response=ResponseOptions(logprobs=True, top_logprobs=2)))
    lps = [lp for d in deltas for lp in d.logprobs]
    assert [lp.token_id for lp in lps] == enc("ab") and [lp.token for lp in lps] == ["a", "b"]
    assert lps[0].logprob == -0.5 and [t.logprob for t in lps[0].top] == [-0.5, -2.0]
    assert control.submissions[-1]["sampling_params"].logprobs == 2


async def test_logprobs_as_floats(executor: Any, control: Any) -> None:
    control.logprobs_as_floats, control.script = True, [enc("a"), [_fake.EOS]]
    deltas = await collect(executor, req(response=ResponseOptions(logprobs=True)))
    (lp,) = [lp for d in deltas for lp in d.logprobs]
    assert (lp.token_id, lp.logprob, lp.top) == (enc("a")[0], -0.5, ())
    assert control.submissions[-1]["sampling_params"].logprobs == 1


async def test_token_ids_and_chat_prompts(executor: Any, control: Any) -> None:
    await collect(executor, req(prompt=Prompt(token_ids=(1, *enc("yo")))))
    assert control.submissions[-1]["inputs"] == [1, *enc("yo")]
    await collect(executor, req(prompt=Prompt(messages=(ChatMessage("user", "hi"),)), request_id="r2"))
    assert control.submissions[-1]["inputs"] == enc("user: hi\nassistant: ")
    assert await executor.tokenize("tiny-llama", text="ab") == [1, *enc("ab")]
    assert await executor.tokenize("tiny-llama", text="ab", add_special_tokens=False) == enc("ab")
    assert await executor.tokenize("tiny-llama", messages=[ChatMessage("user", "x")]) == enc("user: x\nassistant: ")


async def test_guided_decoding(model_dir: str, control: Any) -> None:
    from trt_gateway.types import GuidedDecoding

    executor = await started(model_dir, options={"guided_decoding_backend": "xgrammar"})
    assert executor.models()[0].capabilities.guided == ("json_schema", "regex", "grammar", "choice")
    cases = [(GuidedDecoding(json_schema='{"type":"object"}'), "json", '{"type":"object"}'),
             (GuidedDecoding(regex="[0-9]+"), "regex", "[0-9]+"),
             (GuidedDecoding(grammar='root ::= "a"'), "grammar", 'root ::= "a"'),
             (GuidedDecoding(choice=("yes", "no.", "a|b")), "regex", r"(yes|no\.|a\|b)")]
    for i, (guided, field, value) in enumerate(cases):
        await collect(executor, req(guided=guided, request_id=f"g{i}"))
        gd = control.submissions[-1]["sampling_params"].guided_decoding
        assert type(gd).__name__ == "GuidedDecodingParams" and getattr(gd, field) == value


async def test_request_rejected_by_tensorrt_llm_is_invalid_argument(model_dir: str) -> None:
    executor = await started(model_dir, options={"max_num_tokens": 4})
    with pytest.raises(errors.InvalidArgument, match="max_num_tokens"):
        await collect(executor, req("a long prompt"))


# -- abort and errors ----------------------------------------------------------------------------------------------


async def test_every_early_end_aborts_the_tensorrt_llm_request(executor: Any, control: Any) -> None:
    # abort(), closing the stream (the server on cancel, deadline or disconnect) and cancelling the consumer each call
    # RequestOutput.abort(), which reaches the engine's abort_request. Double requests are numbered 1, 2, 3.
    control.step_delay_s = 0.005
    long = StoppingCriteria(ignore_eos=True, max_tokens=500)
    aborted = executor.generate(req(stopping=long, request_id="a"))
    await aborted.__anext__()
    assert await executor.abort("a") is True
    assert [d async for d in aborted][-1].finish.reason is FinishReason.CANCELLED  # type: ignore[union-attr]
    closed = executor.generate(req(stopping=long, request_id="b"))
    await closed.__anext__()
    await closed.aclose()

    started = asyncio.Event()

    async def consume() -> None:
        async for _ in executor.generate(req(stopping=long, request_id="c")):
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert control.abort_calls == [1, 2, 3] and control.aborted == [1, 2, 3]
    assert executor._requests == {}


async def test_request_error_fails_one_request(executor: Any, control: Any) -> None:
    from tensorrt_llm.llmapi import RequestError

    control.fail_after_steps, control.step_error = 1, RequestError("bad request")
    with pytest.raises(errors.Internal, match="bad request"):
        await collect(executor, req())
    assert executor.health() is Health.SERVING


async def test_engine_gone_is_dead(executor: Any) -> None:
    executor.llm.shutdown()  # e.g. the MPI workers died
    assert executor.health() is Health.DEAD
    with pytest.raises(errors.EngineDead):
        await collect(executor, req())


async def test_shutdown_aborts_running_requests(executor: Any, control: Any) -> None:
    control.step_delay_s = 0.005
    gen = executor.generate(req(stopping=StoppingCriteria(ignore_eos=True, max_tokens=500)))
    await gen.__anext__()
    await executor.shutdown()
    assert control.abort_calls == [1] and executor.llm._executor.is_shutdown()
    await gen.aclose()


async def test_priority_only_where_generate_async_takes_it(executor: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    await collect(executor, req(priority=500))  # 1.0–1.2 have no `priority`: nothing extra is passed (else TypeError)
    captured: dict[str, float] = {}
    original = executor.llm.generate_async

    def newest(*, priority: float = 0.5, **kwargs: Any) -> Any:  # the newest API: priority in [0, 1]
        captured["priority"] = priority
        return original(**kwargs)

    monkeypatch.setattr(executor.llm, "generate_async", newest)
    executor.api = dataclasses.replace(executor.api, generate_params=executor.api.generate_params | {"priority"})
    await collect(executor, req(priority=500, request_id="r2"))
    assert captured["priority"] == 0.75


async def test_start_on_the_loop_thread(model_dir: str) -> None:
    executor = await started(model_dir, options={"start_in_thread": False})
    assert executor.health() is Health.SERVING


async def test_submit_errors(executor: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(**kwargs: Any) -> Any:
        raise RuntimeError("something else")

    monkeypatch.setattr(executor.llm, "generate_async", boom)
    with pytest.raises(errors.Internal, match="something else"):
        await collect(executor, req())
    assert executor.health() is Health.SERVING  # one failed submit is not a dead engine
