"""The engine's input side: a `GenerateRequest` becomes an `EngineRequest` (prompt token ids, checked once, with its
compiled grammar and its pinned adapter), the only thing `LLMEngine.add` accepts.

Three stages, because they cost differently; the async front runs each off the event loop and out of the engine
thread that every other request waits on:
1. `checked_ids`: refuse text that cannot fit the context window by its length alone, render chat messages through
   the checkpoint's template, tokenize (1M characters take ~0.5 s) and check the request against the engine's
   bounds (`trt_gateway.validation.check_tokens`, a pass over every id): a worker thread;
2. the grammar: `GrammarBackend.compile_async`, in the backend's own threads within its time budget;
3. `pin`: take a reference on the adapter, which may read an evicted one from disk: a worker thread.
`prepare` does all three in the calling thread, for callers that drive the engine directly.

Ownership: an `EngineRequest` holds one reference on its adapter. `LLMEngine.add` takes it over (the sequence
releases it when it retires); whoever drops an `EngineRequest` before that calls `release()`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from trt_gateway import errors, tool_calls, validation
from trt_gateway.engine import background
from trt_gateway.engine.chat_template import ChatTemplate
from trt_gateway.engine.lora.registry import LoraRef, LoraRegistry
from trt_gateway.engine.structured_output import GrammarBackend
from trt_gateway.types import ChatMessage, GenerateRequest, Tool

T = TypeVar("T")
# Inputs up to this size (characters of text, or ids) are tokenized and checked on the caller's thread: well under a
# millisecond, less than the hop to a worker thread costs. Larger ones go to the tokenizer threads.
INLINE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class EngineBounds:
    """The engine's own limits, which every request is checked against whoever sends it."""

    vocab_size: int
    max_model_len: int
    max_top_logprobs: int


@dataclass(eq=False, slots=True)
class EngineRequest:
    request: GenerateRequest
    prompt_ids: list[int]
    grammar: Any = None  # an xgrammar CompiledGrammar, when the request is guided
    lora: LoraRef | None = None  # the pinned adapter, when the request names one

    def release(self) -> None:
        """Let go of the adapter: for a request that will never reach the engine (idempotent)."""
        if self.lora is not None:
            self.lora.release()


class Tokenizer(Protocol):  # the `tokenizers.Tokenizer` surface used here
    def encode_batch(self, input: Any, is_pretokenized: bool = ..., add_special_tokens: bool = ...) -> Any: ...

    def get_vocab(self, with_added_tokens: bool = ...) -> dict[str, int]: ...


def prepare(
    request: GenerateRequest,
    prompt_ids: Sequence[int],
    bounds: EngineBounds,
    structured: GrammarBackend,
    lora: LoraRegistry | None,
    grammar: Any = None,
) -> EngineRequest:
    """Check, compile, pin (may block: see the module docstring). `grammar`: compiled already by the caller."""
    check_tokens(request, prompt_ids, bounds)
    if request.guided.kind is not None and grammar is None:
        grammar = structured.compile(request.guided)
    return pin(request, prompt_ids, lora, grammar)


def check_tokens(request: GenerateRequest, prompt_ids: Sequence[int], bounds: EngineBounds) -> None:
    validation.check_tokens(
        request,
        prompt_ids,
        vocab_size=bounds.vocab_size,
        max_model_len=bounds.max_model_len,
        max_top_logprobs=bounds.max_top_logprobs,
    )


def pin(request: GenerateRequest, prompt_ids: Sequence[int], lora: LoraRegistry | None, grammar: Any) -> EngineRequest:
    """The request with its adapter pinned (may read it from disk)."""
    ref = None
    if request.adapter is not None:  # last: nothing after it can fail and leave the pin behind
        if lora is None:
            raise errors.FailedPrecondition(
                "LoRA is off: the server was started without adapter roots (--adapter-root)", field="adapter"
            )
        ref = lora.acquire(request.adapter)
    return EngineRequest(request, list(prompt_ids), grammar, ref)


def input_size(text: str | None = None, messages: Sequence[ChatMessage] | None = None, ids: Sequence[int] | None = None) -> int:
    """What tokenizing and checking an input costs, roughly: its characters and ids."""
    return len(text or "") + sum(len(m.content) for m in messages or ()) + len(ids or ())


class InputProcessor:
    """Tokenizer, chat template and the engine's bounds, grammar backend and adapters, for one served model."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        template: ChatTemplate,
        bounds: EngineBounds,
        structured: GrammarBackend,
        lora: LoraRegistry | None,
    ) -> None:
        self.tokenizer = tokenizer
        self.template = template
        self.bounds = bounds
        self.structured = structured
        self.lora = lora
        # No token is longer than the longest vocabulary entry (byte-level entries are at least as long as the text
        # they stand for), so a text longer than the window times this cannot fit: refused before tokenizing.
        self.max_chars_per_token = max(map(len, tokenizer.get_vocab()), default=1)
        # Tokenizing is CPU-bound: a few threads of its own, so that a burst of long texts cannot take every core
        # from the event loop and the engine, nor queue behind (or in front of) unrelated work in asyncio's pool.
        self._pool = background.pool(background.default_workers(), "trt-gateway-tokenize")

    async def in_thread(self, size: int, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)`, for an input of `size`: inline when small, else in the tokenizer threads (a caller cancelled
        meanwhile stops waiting, and work not started yet is dropped)."""
        if size <= INLINE_SIZE:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        # encode_batch, not encode: only the batch call releases the GIL while the Rust tokenizer runs, so a long
        # text tokenized in a worker thread does not stall the event loop (1M characters: ~0.5 s).
        return list(self.tokenizer.encode_batch([text], add_special_tokens=add_special_tokens)[0].ids)

    def render(self, messages: Sequence[ChatMessage], tools: Sequence[Tool] = ()) -> list[int]:
        """Chat messages (and tools: through the template when it takes them, else described in a system turn)."""
        conversation, extra = tool_calls.chat_inputs(messages, tools, self.template.source)
        # The template writes the BOS token itself when the model wants one, so no special tokens are added on top.
        return self.encode(self.template.render(conversation, **extra), False)

    def prompt_ids(self, request: GenerateRequest) -> list[int]:
        prompt = request.prompt
        if prompt.token_ids is not None:
            return list(prompt.token_ids)
        if prompt.messages is not None:
            return self.render(prompt.messages, request.tools)
        return self.encode(prompt.text or "", True)

    def checked_ids(self, request: GenerateRequest) -> list[int]:
        """Stage 1: the prompt's ids, checked against the engine's bounds (raises InvalidArgument)."""
        validation.context_chars(
            request.prompt, self.bounds.max_model_len, self.max_chars_per_token, "the longest token in the vocabulary"
        )
        ids = self.prompt_ids(request)
        check_tokens(request, ids, self.bounds)
        return ids

    def pin(self, request: GenerateRequest, prompt_ids: list[int], grammar: Any) -> EngineRequest:
        """Stage 3."""
        return pin(request, prompt_ids, self.lora, grammar)

    def prepare(self, request: GenerateRequest, prompt_ids: Sequence[int]) -> EngineRequest:
        return prepare(request, prompt_ids, self.bounds, self.structured, self.lora)
