"""The Executor contract, once for every executor: echo, native (the demo model on the CPU), trtllm and vllm (over
their doubles). What every backend must do the same way lives here; backend-specific mapping stays in each backend's
own tests.

Outputs are never written into a test: each test first runs the executor greedily as a reference (echo and the
doubles echo the prompt; the demo model says what it says), then checks a second run against it, so one body fits
every backend. A backend that disagrees with a contract point is marked with `disagrees`: an expected failure, which
turns into a test failure the day the backend agrees.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from contract_drivers import DRIVERS, MODEL, Driver

from trt_gateway import errors
from trt_gateway.executors.base import Executor, Health
from trt_gateway.types import (
    ChatMessage,
    Finish,
    FinishReason,
    GenerateRequest,
    Prompt,
    ResponseOptions,
    SamplingParams,
    StoppingCriteria,
    TokenDelta,
)

PROMPT = "hello world"
RUN = StoppingCriteria(max_tokens=12, ignore_eos=True)  # the reference run: the same tokens every time
LONG = StoppingCriteria(max_tokens=500, ignore_eos=True)  # runs until the test ends it
FAILED = pytest.fail.Exception  # what pytest.raises raises when nothing was raised


def disagrees(**known: tuple[Any, ...]) -> pytest.MarkDecorator:
    """Run on every executor; each one named fails this contract point today, for that reason and with that
    exception (anything else is a real failure, and so is agreeing: the mark is strict, unless a third element says
    the failure is a race that does not happen every run)."""

    def param(name: str) -> object:
        if name not in known:
            return name
        reason, raises, *race = known[name]
        strict = not (race and race[0] == "race")
        return pytest.param(name, marks=pytest.mark.xfail(strict=strict, reason=reason, raises=raises))

    return pytest.mark.parametrize("driver", [param(name) for name in sorted(DRIVERS)], indirect=True)


def request(rid: str = "r1", text: str = PROMPT, *, prompt: Prompt | None = None, model: str = MODEL,
            stopping: StoppingCriteria = RUN, response: ResponseOptions | None = None) -> GenerateRequest:
    """Greedy, so that the native engine gives the same output every time (echo and the doubles ignore it)."""
    return GenerateRequest(request_id=rid, model=model, prompt=prompt or Prompt(text=text),
                           sampling=SamplingParams(temperature=0.0), stopping=stopping,
                           response=response or ResponseOptions())


async def run(executor: Executor, req: GenerateRequest) -> list[TokenDelta]:
    return [d async for d in executor.generate(req)]


async def rest_of(stream: AsyncIterator[TokenDelta], timeout: float = 10) -> list[TokenDelta]:
    return await asyncio.wait_for(_drain(stream), timeout)  # a bound on a hang, not a timing


async def _drain(stream: AsyncIterator[TokenDelta]) -> list[TokenDelta]:
    return [d async for d in stream]


def finish_of(deltas: Sequence[TokenDelta]) -> Finish:
    """The stream's one finish, which must be on its last delta and on no other."""
    assert deltas and deltas[-1].finish is not None, "the stream ended without a finish"
    assert all(d.finish is None for d in deltas[:-1]), "a finish before the last delta"
    return deltas[-1].finish


def text_of(deltas: Sequence[TokenDelta]) -> str:
    return "".join(d.text for d in deltas)


def ids_of(deltas: Sequence[TokenDelta]) -> list[int]:
    return [t for d in deltas for t in d.token_ids]


def new_token_at_a_delta_boundary(deltas: Sequence[TokenDelta]) -> tuple[int, int]:
    """(m, k): delta m > 0 starts at token k with a token not generated before and carries text."""
    seen: list[int] = []
    for m, delta in enumerate(deltas):
        if m and delta.token_ids and delta.token_ids[0] not in seen and delta.text:
            return m, len(seen)
        seen.extend(delta.token_ids)
    raise AssertionError(f"no usable stop token in {deltas}")


def stop_across_deltas(deltas: Sequence[TokenDelta]) -> tuple[str, int]:
    """A 3-character stop string that starts in one delta and ends in a later one, and where it first occurs."""
    full, end = text_of(deltas), 0
    for delta in deltas[:-1]:
        end += len(delta.text)
        at = end - 1
        stop = full[at:at + 3]
        if at > 0 and len(stop) == 3 and stop.strip() and full.find(stop) == at:
            return stop, at
    raise AssertionError(f"no usable stop string in {full!r}")


# -- the model and the stream --------------------------------------------------------------------------------------


async def test_models_describe_the_served_model(executor: Executor, driver: Driver) -> None:
    info = executor.models()[0]
    assert (info.name, info.executor, info.ready) == (MODEL, driver.name, True)
    assert info.executor_version and info.max_context_length > 0 and info.vocab_size > 0
    assert info.eos_token_ids and all(0 <= t < info.vocab_size for t in info.eos_token_ids)
    caps = info.capabilities
    assert caps.tokenize and caps.chat_template and caps.logprobs and caps.max_top_logprobs >= 2  # used below
    assert executor.health() is Health.SERVING


async def test_a_stream_ends_with_one_finish_on_its_last_delta(executor: Executor) -> None:
    deltas = await run(executor, request())
    finish, ids = finish_of(deltas), ids_of(deltas)
    assert finish.reason is FinishReason.LENGTH and len(ids) == finish.usage.completion_tokens == RUN.max_tokens
    assert finish.usage.prompt_tokens == len(await executor.tokenize(MODEL, text=PROMPT))
    assert all(0 <= t < executor.models()[0].vocab_size for t in ids)


async def test_max_tokens_cuts_the_same_output(executor: Executor) -> None:
    full = await run(executor, request())
    short = await run(executor, request(stopping=dataclasses.replace(RUN, max_tokens=3)))
    assert finish_of(short).reason is FinishReason.LENGTH
    assert ids_of(short) == ids_of(full)[:3] and text_of(full).startswith(text_of(short))


# -- stop tokens and stop strings ------------------------------------------------------------------------------------


@pytest.mark.parametrize("include", [False, True], ids=["cut", "kept"])
async def test_a_stop_token_ends_the_stream(executor: Executor, include: bool) -> None:
    full = await run(executor, request())
    m, k = new_token_at_a_delta_boundary(full)
    stop_id = ids_of(full)[k]
    deltas = await run(executor, request(stopping=dataclasses.replace(RUN, stop_token_ids=(stop_id,),
                                                                      include_stop=include)))
    finish = finish_of(deltas)
    assert (finish.reason, finish.matched_stop_token_id) == (FinishReason.STOP_TOKEN, stop_id)
    assert ids_of(deltas)[:k] == ids_of(full)[:k]
    before, text = text_of(full[:m]), text_of(deltas)
    if include:  # its text follows the output before it
        assert ids_of(deltas) == ids_of(full)[:k + 1]
        assert len(text) > len(before) and text.startswith(before) and text_of(full).startswith(text)
    else:
        assert text == before


@disagrees(native=("the engine keeps an excluded stop token in token_ids (and counts it), as vLLM", AssertionError),
           vllm=("the executor keeps an excluded stop token in token_ids (and counts it), as vLLM", AssertionError))
async def test_an_excluded_stop_token_is_not_in_the_token_ids(executor: Executor) -> None:
    full = await run(executor, request())
    _, k = new_token_at_a_delta_boundary(full)
    deltas = await run(executor, request(stopping=dataclasses.replace(RUN, stop_token_ids=(ids_of(full)[k],))))
    assert ids_of(deltas) == ids_of(full)[:k]


@pytest.mark.parametrize("include", [False, True], ids=["cut", "kept"])
async def test_a_stop_string_is_held_back_and_cut(executor: Executor, include: bool) -> None:
    full = await run(executor, request())
    stop, at = stop_across_deltas(full)
    deltas = await run(executor, request(stopping=dataclasses.replace(RUN, stop=(stop,), include_stop=include)))
    finish = finish_of(deltas)
    assert (finish.reason, finish.matched_stop) == (FinishReason.STOP_STRING, stop)
    # Text is only ever appended, so no delta sent any of the stop string (or what followed it) when it is cut.
    assert text_of(deltas) == text_of(full)[:at + len(stop) if include else at]


async def test_text_held_back_for_a_stop_string_is_released_when_the_stream_ends(executor: Executor) -> None:
    full = await run(executor, request())
    text = text_of(full)
    stop = text[-1] + "\u2603"  # the output's last character could start it until the stream ends
    deltas = await run(executor, request(stopping=dataclasses.replace(RUN, stop=(stop,))))
    assert finish_of(deltas).reason is FinishReason.LENGTH
    assert (text_of(deltas), ids_of(deltas)) == (text, ids_of(full))  # nothing lost
    assert deltas[-1].text.endswith(text[-1])  # held until the end


# -- what a request may ask for --------------------------------------------------------------------------------------


async def test_logprobs_follow_the_tokens(executor: Executor) -> None:
    options = ResponseOptions(logprobs=True, top_logprobs=2)
    deltas = await run(executor, request(stopping=dataclasses.replace(RUN, max_tokens=4), response=options))
    for delta in deltas:
        assert [lp.token_id for lp in delta.logprobs] == list(delta.token_ids)
    for lp in (lp for d in deltas for lp in d.logprobs):
        assert lp.logprob <= 0.0 and lp.top
        assert (lp.top[0].token_id, lp.top[0].logprob) == (lp.token_id, lp.logprob)  # greedy: the likeliest
        assert [t.logprob for t in lp.top] == sorted((t.logprob for t in lp.top), reverse=True)


@disagrees(echo=("the echo executor lists only the sampled token among the top alternatives", AssertionError))
async def test_top_logprobs_lists_as_many_as_asked(executor: Executor) -> None:
    options = ResponseOptions(logprobs=True, top_logprobs=2)
    deltas = await run(executor, request(stopping=dataclasses.replace(RUN, max_tokens=4), response=options))
    assert all(len(lp.top) == 2 for d in deltas for lp in d.logprobs)


async def test_prompt_token_ids_come_once_first(executor: Executor) -> None:
    ids = await executor.tokenize(MODEL, text=PROMPT)
    deltas = await run(executor, request(response=ResponseOptions(prompt_token_ids=True)))
    prompt = deltas[0].prompt
    assert prompt is not None and (prompt.token_ids, prompt.num_tokens) == (tuple(ids), len(ids))
    assert all(d.prompt is None for d in deltas[1:])
    assert finish_of(deltas).usage.prompt_tokens == len(ids)


async def test_echo_sends_the_prompt_text_once_first(executor: Executor) -> None:
    deltas = await run(executor, request(response=ResponseOptions(echo=True)))
    prompt = deltas[0].prompt
    assert prompt is not None and prompt.text == PROMPT
    assert all(d.prompt is None for d in deltas[1:])


async def test_a_token_id_prompt_is_its_text_tokenized(executor: Executor) -> None:
    ids = await executor.tokenize(MODEL, text=PROMPT)
    by_text = await run(executor, request())
    by_ids = await run(executor, request(prompt=Prompt(token_ids=tuple(ids))))
    assert (ids_of(by_ids), text_of(by_ids)) == (ids_of(by_text), text_of(by_text))
    assert finish_of(by_ids).usage.prompt_tokens == len(ids)


async def test_a_chat_prompt_is_its_rendered_token_ids(executor: Executor) -> None:
    messages = (ChatMessage("system", "be brief"), ChatMessage("user", "hi"))
    ids = await executor.tokenize(MODEL, messages=messages)
    by_chat = await run(executor, request(prompt=Prompt(messages=messages)))
    by_ids = await run(executor, request(prompt=Prompt(token_ids=tuple(ids))))
    assert (ids_of(by_chat), text_of(by_chat)) == (ids_of(by_ids), text_of(by_ids))
    assert finish_of(by_chat).usage.prompt_tokens == len(ids)


# -- refusals ----------------------------------------------------------------------------------------------------------


async def test_an_unknown_model_is_not_found(executor: Executor) -> None:
    with pytest.raises(errors.NotFound) as refused:
        await run(executor, request(model="other"))
    assert refused.value.field == "model"
    with pytest.raises(errors.NotFound):
        await executor.tokenize("other", text=PROMPT)


async def test_a_duplicate_running_request_id_is_refused(executor: Executor) -> None:
    first = executor.generate(request(stopping=dataclasses.replace(RUN, max_tokens=30)))
    head = await anext(first)
    with pytest.raises(errors.AlreadyExists) as refused:
        await run(executor, request())
    assert refused.value.field == "request_id"
    deltas = [head, *await rest_of(first)]  # the running request goes on undisturbed
    assert finish_of(deltas).reason is FinishReason.LENGTH and len(ids_of(deltas)) == 30


@disagrees(trtllm=("the executor leaves the context-window check to TensorRT-LLM; the double does not do it", FAILED))
async def test_a_refused_request_fails_alone(executor: Executor) -> None:
    too_long = "x " * (2 * executor.models()[0].max_context_length)
    with pytest.raises(errors.InvalidArgument):
        await run(executor, request(text=too_long))
    assert executor.health() is Health.SERVING
    assert finish_of(await run(executor, request())).reason is FinishReason.LENGTH  # and its id is free


# -- ending a request early ------------------------------------------------------------------------------------------


async def test_abort_ends_the_stream_with_cancelled(executor: Executor) -> None:
    assert await executor.abort("r1") is False  # nothing runs under that id yet
    stream = executor.generate(request(stopping=LONG))
    head = [await anext(stream), await anext(stream)]
    assert await executor.abort("r1") is True
    finish = finish_of([*head, *await rest_of(stream)])
    assert finish.reason is FinishReason.CANCELLED and finish.usage.completion_tokens < LONG.max_tokens
    assert await executor.abort("r1") is False  # idempotent: it is over


async def test_closing_the_stream_frees_the_request(executor: Executor) -> None:
    stream = executor.generate(request(stopping=LONG))
    await anext(stream)
    await stream.aclose()  # what the server does when the client cancels, its deadline passes or it disconnects
    assert await executor.abort("r1") is False
    again = await run(executor, request(stopping=dataclasses.replace(RUN, max_tokens=4)))
    assert finish_of(again).reason is FinishReason.LENGTH and len(ids_of(again)) == 4


async def test_cancelling_the_consumer_frees_the_request(executor: Executor) -> None:
    started, again = asyncio.Event(), []

    async def consume_then_retry() -> None:
        try:
            async for _ in executor.generate(request(stopping=LONG)):
                started.set()
        except asyncio.CancelledError:  # by now the request must be over: its id is free for a retry at once
            assert await executor.abort("r1") is False
            again.extend(await run(executor, request(stopping=dataclasses.replace(RUN, max_tokens=4))))
            raise

    task = asyncio.create_task(consume_then_retry())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finish_of(again).reason is FinishReason.LENGTH and len(ids_of(again)) == 4


# -- engine death and shutdown ---------------------------------------------------------------------------------------


@disagrees(echo=("kill() marks the echo executor dead but lets a running stream go on", FAILED))
async def test_engine_death_fails_the_running_request(executor: Executor, driver: Driver) -> None:
    stream = executor.generate(request(stopping=LONG))
    await anext(stream)
    driver.kill(executor)
    with pytest.raises(errors.EngineDead):
        await rest_of(stream)
    assert executor.health() is Health.DEAD


async def test_a_dead_engine_refuses_every_request(executor: Executor, driver: Driver) -> None:
    driver.kill(executor)
    with pytest.raises(errors.EngineDead):
        await run(executor, request())
    assert executor.health() is Health.DEAD
    with pytest.raises(errors.EngineDead):
        await run(executor, request("r2"))


@disagrees(native=("a stream still running at shutdown fails with UNAVAILABLE instead of ending CANCELLED",
                   errors.Unavailable),
           trtllm=("a stream still running at shutdown never ends over the double: the executor aborts it, then "
                   "shuts TensorRT-LLM down before it answers the abort (a race: some runs it answers in time)",
                   TimeoutError, "race"))
async def test_shutdown_ends_running_streams_cancelled(executor: Executor) -> None:
    stream = executor.generate(request(stopping=LONG))
    head = await anext(stream)
    await executor.shutdown()
    assert finish_of([head, *await rest_of(stream, timeout=1)]).reason is FinishReason.CANCELLED


async def test_shutdown_stops_the_executor_and_may_be_repeated(executor: Executor) -> None:
    await executor.shutdown()
    assert executor.health() is Health.STARTING  # stopped on purpose: not DEAD, which makes the process exit
    await executor.shutdown()
