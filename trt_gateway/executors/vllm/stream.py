"""One vLLM `AsyncLLM.generate(...)` stream of DELTA `RequestOutput`s, as gateway `TokenDelta`s, with Abort designed in.

vLLM's side of the contract (vllm/v1/engine/async_llm.py): `generate` is an async generator fed by one per-request
output collector; when the generator is closed (GeneratorExit) or the task awaiting it is cancelled (CancelledError),
it aborts the request in the engine and re-raises. With `RequestOutputKind.DELTA`, each output holds the text and
token ids since the previous one (the collector merges outputs while the consumer lags), and the last one has
`finished` and `finish_reason`.

Abort RPC: vLLM >= 0.10.1 ends an out-of-band `AsyncLLM.abort(id)` stream with a final "abort" output, older v1
versions leave the generator waiting for ever. So the executor does not rely on it: `RequestState.wake_for_abort`
cancels the await that the consumer is suspended in (vLLM then aborts the request itself, as on any cancel), and
this loop turns that one cancellation back into a CANCELLED finish. A consumer that is busy elsewhere sees the flag at
its next step. Either way no per-step task or queue is added to the hot path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from trt_gateway import errors
from trt_gateway.executors.request_output import logprobs, prompt_info
from trt_gateway.executors.vllm.params import finish_reason
from trt_gateway.types import Finish, FinishReason, GenerateRequest, TokenDelta, Usage


@dataclass
class RequestState:
    """One running request, as Abort sees it."""

    request_id: str
    task: asyncio.Task[Any] | None = None  # the task iterating the stream, while `waiting`
    waiting: bool = False  # suspended inside vLLM's generator
    abort_requested: bool = False
    woken: bool = False  # wake_for_abort cancelled `task` (once)
    finished: bool = False  # the final output (or the CANCELLED finish) was produced

    def wake_for_abort(self) -> None:
        self.abort_requested = True
        if self.waiting and self.task is not None and not self.woken:
            self.woken = True
            self.task.cancel()


@dataclass(frozen=True)
class ErrorKinds:
    dead: tuple[type[BaseException], ...]  # EngineDeadError
    request: tuple[type[BaseException], ...]  # EngineGenerateError
    client: tuple[type[BaseException], ...]  # ValueError / VLLMValidationError / VLLMClientError


async def deltas(
    request: GenerateRequest,
    stream: AsyncIterator[Any],
    state: RequestState,
    decode: Callable[[list[int]], str],
    kinds: ErrorKinds,
) -> AsyncGenerator[TokenDelta, None]:
    r = request.response
    token_text = lambda t: decode([t])  # noqa: E731 - only where vLLM gave no decoded_token
    want_logprobs, want_prompt = r.logprobs or r.top_logprobs > 0, r.prompt_token_ids or r.echo
    completion_tokens, last_token, prompt_tokens = 0, None, 0
    while True:
        # 1. An Abort that came while this consumer was away (or the one that woke it) ends the output here.
        if state.abort_requested:
            state.finished = True
            yield TokenDelta(finish=Finish(FinishReason.CANCELLED, Usage(prompt_tokens, completion_tokens)))
            return
        # 2. Wait for vLLM's next output; Abort may cancel this await (and only this one).
        state.task, state.waiting = asyncio.current_task(), True
        try:
            out = await stream.__anext__()
        except StopAsyncIteration:
            raise errors.Internal("vLLM ended the stream without a final output") from None
        except asyncio.CancelledError:
            if _woken_by_abort(state):
                continue
            raise
        except kinds.dead as exc:
            raise errors.EngineDead(f"the vLLM engine died: {exc}") from exc
        except kinds.client as exc:
            raise errors.InvalidArgument(f"vLLM rejected the request: {exc}") from exc
        except kinds.request as exc:
            raise errors.Internal(f"vLLM failed the request: {_cause(exc)}") from exc
        finally:
            state.waiting = False
        # 3. Convert one DELTA output: it may hold several tokens (speculation, a lagging consumer, stream_interval).
        completion = out.outputs[0]
        ids = tuple(completion.token_ids)
        completion_tokens += len(ids)
        last_token = ids[-1] if ids else last_token
        lps = logprobs(completion.logprobs, ids, r.top_logprobs, token_text) if want_logprobs and completion.logprobs else ()
        prompt = None
        if want_prompt or not prompt_tokens:
            prompt_tokens = len(out.prompt_token_ids or ())
            if want_prompt:
                prompt = prompt_info(out, r.prompt_token_ids, r.echo, decode)
                want_prompt = False
        if out.finished:
            reason, matched, token = finish_reason(completion, last_token)
            usage = Usage(prompt_tokens, completion_tokens, cached_tokens=int(getattr(out, "num_cached_tokens", 0) or 0))
            state.finished = True
            yield TokenDelta(completion.text, ids, lps, prompt, Finish(reason, usage, matched, token, _queue_s(out)))
            return
        if completion.text or ids or prompt:
            yield TokenDelta(completion.text, ids, lps, prompt)


def _woken_by_abort(state: RequestState) -> bool:
    """Whether the CancelledError just caught is wake_for_abort's, and no one else's."""
    if not state.woken:
        return False
    task = asyncio.current_task()
    uncancel = getattr(task, "uncancel", None)  # Python 3.11+: count our cancel as handled
    return not (uncancel is not None and uncancel() > 0)  # > 0: a real cancellation (deadline, shutdown) too


def _cause(exc: BaseException) -> str:
    """EngineGenerateError carries no message of its own; the reason is its __cause__."""
    cause = exc.__cause__
    return f"{type(cause).__name__}: {cause}" if cause is not None else f"{type(exc).__name__}: {exc}"


def _queue_s(out: Any) -> float:
    """Time in vLLM's waiting queue, from the engine-core timestamps in RequestOutput.metrics (when stats are on)."""
    metrics = getattr(out, "metrics", None)
    queued, scheduled = getattr(metrics, "queued_ts", 0.0), getattr(metrics, "scheduled_ts", 0.0)
    if isinstance(queued, float) and isinstance(scheduled, float) and 0 < queued <= scheduled:
        return scheduled - queued
    return 0.0
