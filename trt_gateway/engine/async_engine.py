"""The typed async front of the embedded engine, shaped like vLLM v1's `AsyncLLM`: `generate`, `abort`, `tokenize`,
adapters and `stats()`. Nothing above it touches the `LLMEngine`, which its own thread owns.

One request, as numbered steps:
1. `InputProcessor` turns it into an `EngineRequest`: tokenized and checked in a worker thread, its grammar compiled
   in the grammar backend's threads (within a time budget), its adapter pinned in a worker thread. Nothing that
   grows with the input runs on the event loop, which every other stream and the health checks share;
2. the engine thread picks it up, `LLMEngine.add`s it and loops schedule -> run -> postprocess;
3. `OutputProcessor` turns each `StepOutput` into a `TokenDelta` in that thread; one step's deltas reach the loop in
   a single `call_soon_threadsafe`, each into its request's own queue, which `generate` drains.

Cancellation: closing or cancelling `generate` (a client gone, a deadline) aborts the request in the engine, which
frees its KV blocks and its adapter at the next step; a request cancelled while its grammar waits to compile drops
the compile; one cancelled while its pin is being taken releases the pin when the worker thread finishes.

Failure model (vLLM v1's): an exception from `step()` kills the engine. Every waiting request gets `EngineDead`
(UNAVAILABLE) and `dead` turns True, so the server exits for its supervisor. A per-request failure
(`StepOutput.error`, e.g. out of memory for one step) fails only that request.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trt_gateway import errors, validation
from trt_gateway.engine import compile_lanes, structured_output
from trt_gateway.engine.engine_config import EngineConfig, EngineConfigError
from trt_gateway.engine.input_processor import EngineRequest, InputProcessor, input_size
from trt_gateway.engine.llm_engine import LLMEngine, StepOutput
from trt_gateway.engine.output_processor import OutputProcessor, OutputState
from trt_gateway.engine.stats import EngineStats
from trt_gateway.types import AdapterInfo, ChatMessage, GenerateRequest, TokenDelta

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EngineFacts:
    """What the layers above need to describe the served model; fixed once the engine has started."""

    max_model_len: int
    vocab_size: int
    eos_token_ids: tuple[int, ...]
    max_top_logprobs: int
    chat_template: bool
    guided: tuple[str, ...]  # guided-decoding kinds this engine can enforce
    lora: bool
    max_loras: int
    max_lora_rank: int
    speculative: str  # "" when off
    num_draft_tokens: int


@dataclass(eq=False)
class _Request:
    """One request in flight. The loop reads `queue`; the engine thread owns `out`.

    Aborts name these objects, not request ids: an id is free for reuse as soon as its stream is closed, so a new
    request may carry the id of one whose abort has not reached the engine yet."""

    prepared: EngineRequest
    out: OutputState
    queue: asyncio.Queue[TokenDelta | BaseException]

    @property
    def request_id(self) -> str:
        return self.prepared.request.request_id


class AsyncEngine:
    """Build with `await AsyncEngine.start(config)`; `shutdown()` when done."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.engine: LLMEngine | None = None  # owned by the engine thread; read it only in tests and benchmarks
        self.facts: EngineFacts | None = None
        self._inputs: InputProcessor | None = None
        self._outputs: OutputProcessor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._cv = threading.Condition()
        self._incoming: list[_Request] = []  # guarded by _cv
        self._aborts: list[_Request] = []  # guarded by _cv
        self._requests: dict[str, _Request] = {}  # request id -> state; the loop's: whose stream is open
        # request id -> state, the engine thread's: whose sequence is in the engine. The two differ when an id is
        # reused: the closed stream's sequence may still run a step, and its tokens must not reach the new stream.
        self._running: dict[str, _Request] = {}
        self._stopping = False
        self.error: BaseException | None = None  # set when the engine died

    # -- lifecycle (event loop) -----------------------------------------------------------------------------------

    @classmethod
    async def start(cls, config: EngineConfig) -> AsyncEngine:
        """Load the tokenizer and template, then build the engine (loading weights) in its thread and keep it
        stepping there. Raises EngineConfigError naming what to change when the checkpoint cannot be served."""
        from tokenizers import Tokenizer

        from trt_gateway.engine import gguf_checkpoint, gguf_tokenizer
        from trt_gateway.engine.chat_template import ChatTemplate

        self = cls(config)
        model = Path(config.model)
        tokenizer_file = model / "tokenizer.json"
        if (gguf_file := gguf_checkpoint.find_gguf(model)) is not None:
            tokenizer = gguf_tokenizer.gguf_tokenizer(gguf_file)
            template = gguf_tokenizer.gguf_chat_template(gguf_file)
        elif not tokenizer_file.is_file():
            raise EngineConfigError(f"{model} has no tokenizer.json (HF fast tokenizer required)", field="model")
        else:
            try:
                tokenizer = Tokenizer.from_file(str(tokenizer_file))
            except Exception as exc:  # tokenizers raises a bare Exception for a corrupt file
                raise EngineConfigError(f"{tokenizer_file} cannot be read ({exc})", field="model") from exc
            template = ChatTemplate.from_pretrained(model)
        self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[LLMEngine] = self._loop.create_future()
        # One tokenizer for both sides: `tokenizers.Tokenizer` is safe to share between threads.
        self._thread = threading.Thread(
            target=self._run, args=(ready, tokenizer), name="trt-gateway-engine", daemon=True
        )
        self._thread.start()
        engine = self.engine = await ready
        self._inputs = InputProcessor(tokenizer, template, engine.bounds, engine.structured, engine.lora)
        c = engine.config
        self.facts = EngineFacts(
            max_model_len=engine.max_model_len,
            vocab_size=engine.vocab_size,
            eos_token_ids=tuple(engine.eos_token_ids),
            max_top_logprobs=c.max_top_logprobs,
            chat_template=template.available,
            guided=structured_output.KINDS if structured_output.available() else (),
            lora=engine.lora is not None,
            max_loras=c.max_loras if engine.lora is not None else 0,
            max_lora_rank=c.max_lora_rank if engine.lora is not None else 0,
            speculative=c.speculative_mode,
            num_draft_tokens=c.num_draft_tokens if c.speculative_mode else 0,
        )
        return self

    @property
    def dead(self) -> bool:
        return self.error is not None

    async def shutdown(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        if self.engine is not None:
            self.engine.structured.shutdown()
        if self._inputs is not None:
            self._inputs.shutdown()
        for state in list(self._requests.values()):
            state.queue.put_nowait(errors.Unavailable("the engine is shutting down"))

    def stats(self) -> EngineStats | None:
        """None before the engine has started."""
        return self.engine.stats() if self.engine is not None else None

    # -- requests (event loop) ------------------------------------------------------------------------------------

    async def generate(self, request: GenerateRequest) -> AsyncGenerator[TokenDelta, None]:
        """Stream one request's deltas; the last carries `finish`. Raises a GatewayError for this request only, or
        EngineDead when the engine is gone."""
        inputs = self._started()
        rid = request.request_id
        if rid in self._requests:
            raise validation.duplicate_request_id(rid)
        prepared = await _prepare(inputs, request)
        if rid in self._requests:  # taken while this one was being prepared
            prepared.release()
            raise validation.duplicate_request_id(rid)
        assert self._outputs is not None
        state = _Request(prepared, self._outputs.state(request, prepared.prompt_ids), asyncio.Queue())
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
            if self._requests.get(rid) is state:
                del self._requests[rid]
            if not finished:  # cancelled or closed early: free the KV blocks at the next step
                self._abort_in_engine(state)

    async def abort(self, request_id: str) -> bool:
        state = self._requests.get(request_id)
        if state is None:
            return False
        self._abort_in_engine(state)
        return True

    def _abort_in_engine(self, state: _Request) -> None:
        with self._cv:
            self._aborts.append(state)
            self._cv.notify()

    async def tokenize(
        self, *, text: str | None = None, messages: Sequence[ChatMessage] | None = None, add_special_tokens: bool = True
    ) -> list[int]:
        inputs = self._started()
        if messages:  # a chat template is Python (jinja): in a thread it shares the GIL, but in 5 ms slices
            return await inputs.in_thread(input_size(messages=messages), inputs.render, messages)
        return await inputs.in_thread(input_size(text), inputs.encode, text or "", add_special_tokens)

    # -- adapters (event loop; file reads in worker threads) ------------------------------------------------------

    async def load_adapter(self, name: str, path: str) -> AdapterInfo:
        return await asyncio.to_thread(self._lora().register, name, path)

    async def unload_adapter(self, name: str) -> None:
        self._lora().unregister(name)

    def list_adapters(self) -> list[AdapterInfo]:
        return self._lora().list()

    def _lora(self) -> Any:
        registry = self._started().lora
        if registry is None:
            raise errors.FailedPrecondition(
                "LoRA is off: the server was started without adapter roots (--adapter-root)", field="adapter"
            )
        return registry

    def _started(self) -> InputProcessor:
        if self.error is not None:
            raise errors.EngineDead(f"the engine has failed: {type(self.error).__name__}") from self.error
        if self._inputs is None:
            raise errors.Unavailable("the engine has not started")
        return self._inputs

    # -- the engine thread ----------------------------------------------------------------------------------------

    def _run(self, ready: asyncio.Future[LLMEngine], tokenizer: Any) -> None:
        assert self._loop is not None
        try:
            engine = LLMEngine(self.config)
            self._outputs = OutputProcessor(tokenizer, engine.finish)
        except BaseException as exc:  # noqa: BLE001 - reported to start(), which raises it on the loop
            self._loop.call_soon_threadsafe(_settle, ready, None, exc)
            return
        self._loop.call_soon_threadsafe(_settle, ready, engine, None)
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
        outputs = self._outputs
        assert outputs is not None
        deliveries: list[tuple[_Request, TokenDelta | BaseException]] = []
        # 1. Aborts first, applied now: a request reusing an aborted one's id may be among the incoming.
        stopping = [state for state in aborts if self._running.get(state.request_id) is state]
        for state in stopping:
            engine.abort(state.request_id)
        if stopping:
            self._route(engine.apply_pending(), deliveries)  # an Abort RPC's consumer still waits for its finish
        # 2. New requests; one aborted before it ever reached the engine just ends.
        aborted = set(aborts)
        for state in incoming:
            if state in aborted:
                state.prepared.release()
                deliveries.append((state, outputs.cancelled(state.out)))
                continue
            try:
                engine.add(state.prepared)
            except errors.GatewayError as exc:
                deliveries.append((state, exc))
                continue
            self._running[state.request_id] = state
            response = state.prepared.request.response
            if response.prompt_token_ids or response.echo:
                deliveries.append((state, outputs.prompt_delta(state.out)))
        # 3. One step.
        self._route(engine.step(), deliveries)
        if deliveries:
            assert self._loop is not None
            self._loop.call_soon_threadsafe(_deliver, deliveries)
        return True

    def _route(self, step_outputs: list[StepOutput], deliveries: list[tuple[_Request, Any]]) -> None:
        """Each output to the request whose sequence produced it (not whatever stream now holds its id)."""
        assert self._outputs is not None
        for out in step_outputs:
            owner = self._running.get(out.request_id)
            if owner is None:
                continue
            if out.finished:
                del self._running[out.request_id]
            if owner.out.done or self._requests.get(out.request_id) is not owner:
                continue  # a stop string already ended it, or its stream is closed
            delta = self._outputs.process(owner.out, out)
            if delta is not None:
                deliveries.append((owner, delta))

    def _fail_all(self, error: BaseException) -> None:
        for state in list(self._requests.values()):
            state.queue.put_nowait(error)


async def _prepare(inputs: InputProcessor, request: GenerateRequest) -> EngineRequest:
    """The three input stages (input_processor.py), none of them on the event loop."""
    p = request.prompt
    ids = await inputs.in_thread(input_size(p.text, p.messages, p.token_ids), inputs.checked_ids, request)
    grammar = None
    if request.guided.kind is not None:
        grammar = await inputs.structured.compile_async(request.guided, compile_lanes.tenant(request.request_id))
    if request.adapter is None:
        return EngineRequest(request, ids, grammar)
    return await _pin(inputs, request, ids, grammar)


async def _pin(inputs: InputProcessor, request: GenerateRequest, ids: list[int], grammar: Any) -> EngineRequest:
    """`pin` in a worker thread. If the caller is cancelled meanwhile, the pin is released when it finishes."""
    running = asyncio.ensure_future(asyncio.to_thread(inputs.pin, request, ids, grammar))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        running.add_done_callback(_release_result)
        raise


def _release_result(done: asyncio.Future[EngineRequest]) -> None:
    if not done.cancelled() and done.exception() is None:
        done.result().release()


def _deliver(deliveries: list[tuple[_Request, Any]]) -> None:
    for state, item in deliveries:
        state.queue.put_nowait(item)


def _settle(fut: asyncio.Future[LLMEngine], value: LLMEngine | None, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)  # type: ignore[arg-type]
