"""The async front of the engine: `LLMEngine` steps in its own thread; each request reads its own asyncio queue.

The gRPC event loop never runs model code. It hands requests to the engine thread and awaits per-request queues;
the engine thread loops schedule -> run -> postprocess, turns each `StepOutput` into a `TokenDelta` (detokenised,
stop strings held back) and delivers one step's deltas to the loop in a single `call_soon_threadsafe`.

Text is produced in the engine thread because a stop string must end its sequence before the next step computes
another token: `engine.finish` is applied first thing in the next `step()`, so output never overshoots a stop.

Failure model (vLLM v1's): an exception from `step()` kills the engine. Every waiting request gets `EngineDead`
(UNAVAILABLE) and `health()` reports DEAD, so the server exits for its supervisor. A per-request failure
(`StepOutput.error`, e.g. out of memory for one step) fails only that request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from trt_gateway import errors
from trt_gateway.engine.detokenizer import IncrementalDetokenizer, TextDecoder
from trt_gateway.engine.llm_engine import LLMEngine, StepOutput
from trt_gateway.stopping import StopStringMatcher
from trt_gateway.types import (
    Finish,
    FinishReason,
    GenerateRequest,
    PromptInfo,
    TokenDelta,
    TokenLogprob,
    TopLogprob,
    Usage,
)

log = logging.getLogger(__name__)


@dataclass
class _Request:
    """One request's state, owned by the engine thread once submitted (the queue is the only shared part)."""

    request: GenerateRequest
    prompt_ids: list[int]
    grammar: Any
    queue: asyncio.Queue[TokenDelta | BaseException]
    detok: IncrementalDetokenizer
    stop: StopStringMatcher
    done: bool = False


class AsyncEngine:
    def __init__(self, build: Callable[[], LLMEngine], tokenizer: TextDecoder) -> None:
        self._build = build
        self._tokenizer = tokenizer
        self.engine: LLMEngine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._cv = threading.Condition()
        self._incoming: list[_Request] = []  # guarded by _cv
        self._aborts: list[str] = []  # guarded by _cv
        self._requests: dict[str, _Request] = {}  # request id -> state; written by the loop, read by the thread
        self._stopping = False
        self.error: BaseException | None = None  # set when the engine died

    # -- lifecycle (event loop) -----------------------------------------------------------------------------------

    async def start(self) -> LLMEngine:
        """Build the engine (loading weights) in its thread, then keep stepping there."""
        self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[LLMEngine] = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="trt-gateway-engine", daemon=True)
        self._thread.start()
        self.engine = await ready
        return self.engine

    @property
    def dead(self) -> bool:
        return self.error is not None

    async def shutdown(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        for state in list(self._requests.values()):
            state.queue.put_nowait(errors.Unavailable("the engine is shutting down"))

    # -- requests (event loop) ------------------------------------------------------------------------------------

    async def generate(
        self, request: GenerateRequest, prompt_ids: Sequence[int], grammar: Any = None
    ) -> AsyncIterator[TokenDelta]:
        """grammar: the compiled guided-decoding constraint (compile it off the loop: `engine.structured`)."""
        if self.error is not None:
            raise errors.EngineDead(f"the engine has failed: {type(self.error).__name__}") from self.error
        rid = request.request_id
        if rid in self._requests:
            raise errors.AlreadyExists(f"request_id {rid!r} is already running", field="request_id")
        stopping = request.stopping
        state = _Request(
            request=request,
            prompt_ids=list(prompt_ids),
            grammar=grammar,
            queue=asyncio.Queue(),
            detok=IncrementalDetokenizer(self._tokenizer, prompt_ids),
            stop=StopStringMatcher(stopping.stop, include_stop=stopping.include_stop),
        )
        self._requests[rid] = state
        with self._cv:
            self._incoming.append(state)
            self._cv.notify()
        finished = False
        try:
            while True:
                item = await state.queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = item.finish is not None
                yield item
                if finished:
                    return
        finally:
            self._requests.pop(rid, None)
            if not finished:  # cancelled or closed early: free the KV blocks at the next step
                self._abort_in_engine(rid)

    async def abort(self, request_id: str) -> bool:
        if request_id not in self._requests:
            return False
        self._abort_in_engine(request_id)
        return True

    def _abort_in_engine(self, request_id: str) -> None:
        with self._cv:
            self._aborts.append(request_id)
            self._cv.notify()

    # -- the engine thread ----------------------------------------------------------------------------------------

    def _run(self, ready: asyncio.Future[LLMEngine]) -> None:
        assert self._loop is not None
        try:
            engine = self._build()
        except BaseException as exc:  # noqa: BLE001 - reported to start(), which raises it on the loop
            self._loop.call_soon_threadsafe(_set_exception, ready, exc)
            return
        self._loop.call_soon_threadsafe(_set_result, ready, engine)
        try:
            while self._step(engine):
                pass
        except BaseException as exc:  # noqa: BLE001 - a failed step is fatal for the whole engine
            log.critical("engine step failed; the engine is dead", exc_info=exc)
            self.error = exc
            dead = errors.EngineDead(f"the engine failed: {type(exc).__name__}")
            self._loop.call_soon_threadsafe(self._fail_all, dead)

    def _step(self, engine: LLMEngine) -> bool:
        """One iteration: take new work, step once, deliver. False when shutting down."""
        with self._cv:
            while not (self._incoming or self._aborts or self._stopping or engine.has_unfinished()):
                self._cv.wait()
            if self._stopping:
                return False
            incoming, self._incoming = self._incoming, []
            aborts, self._aborts = self._aborts, []
        deliveries: list[tuple[_Request, TokenDelta | BaseException]] = []
        aborted = set(aborts)
        for state in incoming:
            if state.request.request_id in aborted:  # cancelled before it ever reached the engine
                deliveries.append((state, TokenDelta(finish=_cancelled(state))))
                continue
            try:
                engine.add_request(state.request, state.prompt_ids, state.grammar)
            except errors.GatewayError as exc:
                deliveries.append((state, exc))
                continue
            if state.request.response.prompt_token_ids or state.request.response.echo:
                deliveries.append((state, self._prompt_delta(state)))
        for rid in aborts:
            engine.abort(rid)
        for out in engine.step():
            owner = self._requests.get(out.request_id)
            if owner is None or owner.done:
                continue  # the consumer is gone, or a stop string already ended it
            delta = self._delta(engine, owner, out)
            if delta is not None:
                deliveries.append((owner, delta))
        if deliveries:
            assert self._loop is not None
            self._loop.call_soon_threadsafe(_deliver, deliveries)
        return True

    def _delta(self, engine: LLMEngine, state: _Request, out: StepOutput) -> TokenDelta | BaseException | None:
        if out.error is not None:
            state.done = True
            return out.error
        request = state.request
        ids = out.new_token_ids
        usage = out.usage
        # The token that ended the sequence (EOS / a stop token id) is text only with include_stop.
        text_ids = ids
        if out.matched_stop_token_id is not None and not request.stopping.include_stop and ids:
            text_ids = ids[:-1]
        if len(text_ids) > 1 and request.stopping.stop:
            # Several tokens at once (accepted drafts): feed them one by one so that a stop string ends the output
            # at the token that completed it; the engine computed the rest, the caller never sees them.
            text = ""
            for i in range(len(text_ids)):
                text += state.stop.push(state.detok.push(text_ids[i : i + 1]))
                if state.stop.matched is not None:
                    dropped = len(ids) - (i + 1)
                    ids = ids[: i + 1]
                    usage = dataclasses.replace(usage, completion_tokens=usage.completion_tokens - dropped)
                    break
        else:
            text = state.stop.push(state.detok.push(text_ids)) if text_ids else ""
        reason = out.finish_reason
        if reason is not None and state.stop.matched is None:
            # Finished for another reason: release held bytes and text (the tail itself may complete a stop).
            text += state.stop.push(state.detok.flush())
            text += state.stop.flush()
        matched = state.stop.matched
        if matched is not None:
            if reason is None:
                engine.finish(request.request_id, FinishReason.STOP_STRING)  # applied before the next step runs
            reason = FinishReason.STOP_STRING
        logprobs = self._logprobs(out)[: len(ids)] if request.response.logprobs else ()
        if reason is None:
            return TokenDelta(text=text, token_ids=ids, logprobs=logprobs) if ids else None
        state.done = True
        finish = Finish(
            reason=reason,
            usage=usage,
            matched_stop=matched or "",
            matched_stop_token_id=out.matched_stop_token_id if reason is FinishReason.STOP_TOKEN else None,
            queue_time_s=out.queue_time_s,
        )
        return TokenDelta(text=text, token_ids=ids, logprobs=logprobs, finish=finish)

    def _logprobs(self, out: StepOutput) -> tuple[TokenLogprob, ...]:
        decode = self._tokenizer.decode
        return tuple(
            TokenLogprob(
                token_id=s.token_id,
                token=decode([s.token_id], skip_special_tokens=False),
                logprob=s.logprob if s.logprob is not None else 0.0,
                top=tuple(TopLogprob(t, decode([t], skip_special_tokens=False), lp) for t, lp in s.top),
            )
            for s in out.logprobs
        )

    def _prompt_delta(self, state: _Request) -> TokenDelta:
        r = state.request.response
        ids = state.prompt_ids
        return TokenDelta(
            prompt=PromptInfo(
                num_tokens=len(ids),
                token_ids=tuple(ids) if r.prompt_token_ids else (),
                text=self._tokenizer.decode(ids, skip_special_tokens=False) if r.echo else "",
            )
        )

    def _fail_all(self, error: BaseException) -> None:
        for state in list(self._requests.values()):
            state.queue.put_nowait(error)


def _cancelled(state: _Request) -> Finish:
    return Finish(FinishReason.CANCELLED, Usage(prompt_tokens=len(state.prompt_ids)))


def _deliver(deliveries: list[tuple[_Request, Any]]) -> None:
    for state, item in deliveries:
        state.queue.put_nowait(item)


def _set_result(fut: asyncio.Future[LLMEngine], value: LLMEngine) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[LLMEngine], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
