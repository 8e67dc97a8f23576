"""The engine's input side: a `GenerateRequest` becomes an `EngineRequest` (prompt token ids, checked once, with its
compiled grammar and its pinned adapter), the only thing `LLMEngine.add` accepts.

Two stages, because they cost differently:
1. `prompt_ids`: render chat messages through the checkpoint's template and tokenize (the Rust tokenizer is fast);
2. `prepare`: check the request against the engine's bounds (`trt_gateway.validation.check_tokens`), compile its
   grammar, pin its adapter. A new JSON schema can take a while to compile and an evicted adapter is read from
   disk, so the async front runs this stage in a worker thread whenever either is asked for: never on the event
   loop, never in the engine thread that every other request waits on.

Ownership: an `EngineRequest` holds one reference on its adapter. `LLMEngine.add` takes it over (the sequence
releases it when it retires); whoever drops an `EngineRequest` before that calls `release()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from trt_gateway import errors, tool_calls, validation
from trt_gateway.engine.chat_template import ChatTemplate
from trt_gateway.engine.lora.registry import LoraRef, LoraRegistry
from trt_gateway.engine.structured_output import GrammarBackend
from trt_gateway.types import ChatMessage, GenerateRequest, Tool


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
    def encode(self, sequence: Any, pair: Any = ..., is_pretokenized: bool = ..., add_special_tokens: bool = ...) -> Any: ...


def prepare(
    request: GenerateRequest,
    prompt_ids: Sequence[int],
    bounds: EngineBounds,
    structured: GrammarBackend,
    lora: LoraRegistry | None,
    grammar: Any = None,
) -> EngineRequest:
    """Check, compile, pin (may block: see the module docstring). `grammar`: compiled already by the caller."""
    validation.check_tokens(
        request,
        prompt_ids,
        vocab_size=bounds.vocab_size,
        max_model_len=bounds.max_model_len,
        max_top_logprobs=bounds.max_top_logprobs,
    )
    if request.guided.kind is not None and grammar is None:
        grammar = structured.compile(request.guided)
    ref = None
    if request.adapter is not None:  # last: nothing after it can fail and leave the pin behind
        if lora is None:
            raise errors.FailedPrecondition(
                "LoRA is off: the server was started without adapter roots (--adapter-root)", field="adapter"
            )
        ref = lora.acquire(request.adapter)
    return EngineRequest(request, list(prompt_ids), grammar, ref)


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

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)

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

    @staticmethod
    def blocks(request: GenerateRequest) -> bool:
        """Whether `prepare` may block on a compile or a file read for this request."""
        return request.guided.kind is not None or request.adapter is not None

    def prepare(self, request: GenerateRequest, prompt_ids: Sequence[int]) -> EngineRequest:
        return prepare(request, prompt_ids, self.bounds, self.structured, self.lora)
