"""Abort, cancel and close: every way a request ends early must end vLLM's request too, on every vLLM version.

vLLM >= 0.10.1 ends an out-of-band-aborted stream with finish_reason "abort"; older v1 versions leave it waiting.
`final_output_on_abort` switches the double between the two, and each test that can tell runs on both.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from gateway_testing import poll
from vllm_helpers import req, started

from trt_gateway.types import FinishReason, StoppingCriteria

LONG = StoppingCriteria(max_tokens=500, ignore_eos=True)
BOTH = pytest.mark.parametrize("final_output", [True, False], ids=["vllm>=0.10.1", "vllm<0.10.1"])


@pytest.fixture
async def executor(model_dir: str, control: Any) -> Any:
    control.step_delay_s = 0.005
    return await started(model_dir)


def engine_ids(control: Any, rid: str) -> list[str]:
    return [i for i in control.engine_aborted if i.startswith(f"{rid}-")]


@BOTH
async def test_abort_wakes_a_waiting_stream(executor: Any, control: Any, final_output: bool) -> None:
    control.final_output_on_abort = final_output
    stream = executor.generate(req("abcdefgh", stopping=LONG))
    first = await stream.__anext__()

    async def rest() -> list[Any]:
        return [d async for d in stream]

    consumer = asyncio.create_task(rest())
    await asyncio.sleep(0)  # the consumer is now suspended inside vLLM's generator
    assert executor._requests["r1"].waiting
    assert await executor.abort("r1") is True
    done, _ = await asyncio.wait({consumer}, timeout=5)  # a bound for a hang, not a timing: it ends at once
    assert consumer in done, "the aborted stream kept waiting"
    deltas = consumer.result()
    finish = deltas[-1].finish
    assert finish is not None and finish.reason is FinishReason.CANCELLED
    assert finish.usage.completion_tokens == len(first.token_ids) + sum(len(d.token_ids) for d in deltas)
    assert finish.usage.completion_tokens < 500 and len(engine_ids(control, "r1")) == 1
    assert not consumer.cancelled() and not executor._requests
    assert await executor.abort("r1") is False  # idempotent: nothing runs under that id any more


@BOTH
async def test_abort_while_the_consumer_is_busy(executor: Any, control: Any, final_output: bool) -> None:
    control.final_output_on_abort = final_output
    stream = executor.generate(req("abcdefgh", stopping=LONG))
    await stream.__anext__()  # the consumer holds a delta and is not waiting in vLLM
    assert await executor.abort("r1") is True
    rest = [d async for d in stream]
    assert rest[-1].finish is not None and rest[-1].finish.reason is FinishReason.CANCELLED
    assert len(engine_ids(control, "r1")) == 1


async def test_closing_the_stream_aborts_the_vllm_request(executor: Any, control: Any) -> None:
    stream = executor.generate(req("abcdefgh", stopping=LONG))
    await stream.__anext__()
    await stream.aclose()  # what the server does on client cancel, deadline or disconnect
    assert len(engine_ids(control, "r1")) == 1 and not executor._requests
    assert "r1" in control.aborted  # AsyncLLM.abort(external id) as well: idempotent in vLLM


async def test_cancelling_the_consumer_aborts_and_propagates(executor: Any, control: Any) -> None:
    async def consume() -> None:
        async for _ in executor.generate(req("abcdefgh", stopping=LONG)):
            pass

    task = asyncio.create_task(consume())
    assert await poll(lambda: "r1" in executor._requests and executor._requests["r1"].waiting)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(engine_ids(control, "r1")) == 1 and not executor._requests


async def test_a_real_cancel_racing_an_abort_still_cancels(executor: Any, control: Any) -> None:
    async def consume() -> None:
        async for _ in executor.generate(req("abcdefgh", stopping=LONG)):
            pass

    task = asyncio.create_task(consume())
    assert await poll(lambda: "r1" in executor._requests and executor._requests["r1"].waiting)
    executor._requests["r1"].wake_for_abort()  # Abort's cancel ...
    task.cancel()  # ... and a deadline's, before the task runs again
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not executor._requests


