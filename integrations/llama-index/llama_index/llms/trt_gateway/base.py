"""`TrtGateway`: a LlamaIndex LLM over the trt-gateway client.

All eight entry points are native: the sync ones on `GatewayClient`, the async ones on `AsyncGatewayClient` (no
thread hops, no sync calls on the event loop). Chat sends {"role", "content"} messages and the server applies the
model's chat template; only a model without one falls back to `messages_to_prompt`. `metadata` comes from the
server's model info, fetched once. Each decorated entry point calls private helpers, never another decorated one,
so instrumentation sees one event per call. Function calling (`chat_with_tools`, `predict_and_call`, agents) uses
the gateway's own tools (tools.py).
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr, SecretStr, field_validator
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.prompts import BasePromptTemplate
from llama_index.core.types import Model, PydanticProgramMode

from llama_index.llms.trt_gateway import tools as tooling
from trt_gateway import errors
from trt_gateway import types as t
from trt_gateway.client import (
    CALL_FIELDS,
    AsyncGatewayClient,
    Completion,
    GatewayClient,
    LazyClients,
    ModelInfo,
    SharedClients,
    StreamChunk,
    check_call_fields,
)

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

DEFAULT_TARGET = "localhost:50051"
# Request fields a call or `additional_kwargs` may set; the prompt and the number of outputs are ours.
REQUEST_KEYS = CALL_FIELDS
GUIDED_KEYS = frozenset({"json_schema", "regex", "grammar", "choice"})
# The finish reason of the last guided call in this context: a structured prediction whose output does not parse
# says "cut off at max_tokens" when that is why.
_GUIDED_FINISH: ContextVar[str | None] = ContextVar("trt_gateway_guided_finish", default=None)


PromptOf = Callable[[ModelInfo], dict[str, Any]]
_Item = tuple[str, str, "dict[str, Any] | None", "Sequence[t.ToolCall]", str]
# (text so far, delta, raw on the last item only, tool calls on the last item only, reasoning so far)


@dataclass(frozen=True)
class _Request:
    model: str  # the served name (the server's answer when none was asked for)
    prompt: dict[str, Any]  # {"text": ...} or {"messages": [...]}
    params: dict[str, Any]
    timeout: float | None


class TrtGateway(FunctionCallingLLM):
    """An LLM served by a trt-gateway.

        from llama_index.llms.trt_gateway import TrtGateway

        llm = TrtGateway(target="localhost:50051", model="demo", max_tokens=128)
        llm.complete("def fibonacci(n):")
        llm.chat([ChatMessage(role="user", content="Hello")], adapter="sql-lora")

    Per-call keyword arguments are request fields of the gateway client (`model`, `adapter`, `temperature`,
    `max_tokens`, `stop`, ...; plus `timeout`) and override the constructor's. Every response's `raw` is a dict with
    `usage` (prompt_tokens, completion_tokens, total_tokens, cached_tokens, draft_tokens, accepted_tokens),
    `finish_reason`, `model`, `adapter`; a stream carries it on its last item.
    """

    target: str = Field(
        default_factory=lambda: os.environ.get("TRT_GATEWAY_TARGET", DEFAULT_TARGET),
        description='The gateway\'s "host:port" (default: env TRT_GATEWAY_TARGET, else localhost:50051).',
    )
    model: str = Field(default="", description='Served model name; "" is the server\'s default model.')
    adapter: str | None = Field(default=None, description="LoRA adapter loaded on the server.")
    temperature: float | None = Field(default=None, description="Sampling temperature (server default if unset).")
    max_tokens: int | None = Field(
        default=None, description="Tokens to generate at most (default: the server's, capped at half the context)."
    )
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | None = Field(default=None, description="Default stop sequences; per-call `stop` replaces them.")
    additional_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Further request fields: top_k, min_p, repetition_penalty, speculative..."
    )
    context_window: int | None = Field(
        default=None, description="Override the context window the server reports (e.g. to leave headroom)."
    )
    timeout: float | None = Field(default=120.0, description="Seconds for a whole call, retries included.")
    max_retries: int = Field(default=3, description="Retries of UNAVAILABLE / RESOURCE_EXHAUSTED before output.")
    api_key: SecretStr | None = Field(
        default_factory=lambda: SecretStr(k) if (k := os.environ.get("TRT_GATEWAY_API_KEY")) else None,
        description="Sent as a bearer token (default: env TRT_GATEWAY_API_KEY).",
    )
    tls: bool = Field(default=False, description="TLS with the system roots; implied by any certificate option.")
    root_certificates: str | None = Field(default=None, description="CA bundle: PEM path or text.")
    client_certificate: str | None = Field(default=None, description="mTLS certificate chain: PEM path or text.")
    client_key: SecretStr | None = Field(default=None, description="mTLS private key: PEM path or text.")
    server_name_override: str | None = Field(default=None, description="TLS host name to check instead.")

    pydantic_program_mode: PydanticProgramMode = Field(
        default=PydanticProgramMode.LLM,
        description="Structured prediction by the server's guided JSON decoding (a text program), not a tool call.",
    )

    _clients: LazyClients | None = PrivateAttr(default=None)
    clients: ClassVar[SharedClients] = SharedClients()  # LazyClients for this target, built on first use

    @field_validator("additional_kwargs")
    @classmethod
    def _known_request_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_call_fields(value, "additional_kwargs")
        return value

    @classmethod
    def class_name(cls) -> str:
        return "TrtGateway"

    # -- clients and model info -------------------------------------------------------------------------------------

    @property
    def client(self) -> GatewayClient:
        """The blocking gateway client."""
        return self.clients.sync

    @property
    def async_client(self) -> AsyncGatewayClient:
        """The asyncio gateway client; it opens a channel per event loop, on first use in that loop."""
        return self.clients.aio

    def model_info(self, model: str | None = None) -> ModelInfo:
        """The server's model info (cached per model name)."""
        return self.clients.model_info(self.model if model is None else model)

    async def amodel_info(self, model: str | None = None) -> ModelInfo:
        return await self.clients.amodel_info(self.model if model is None else model)

    @property
    def metadata(self) -> LLMMetadata:
        """From the server's model info: context window, `num_output` (below it), chat template, name."""
        info = self.model_info()
        return LLMMetadata(
            context_window=self._context_window(info),
            num_output=self._num_output(info),
            is_chat_model=info.capabilities.chat_template,
            is_function_calling_model=info.capabilities.chat_template,  # tools need a chat prompt
            model_name=info.name,
        )

    def _context_window(self, info: ModelInfo) -> int:
        return self.context_window or info.max_context_length

    def _num_output(self, info: ModelInfo) -> int:
        window = self._context_window(info)
        if self.max_tokens is None:
            return max(1, min(info.limits.default_max_tokens or window // 2, window // 2))
        if self.max_tokens >= window:
            raise ValueError(f"max_tokens ({self.max_tokens}) must be below the context window ({window})")
        return self.max_tokens

    # -- one call ---------------------------------------------------------------------------------------------------

    def _params(self, info: ModelInfo, kwargs: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
        """Request keyword arguments: instance defaults < additional_kwargs < per call (None removes a default)."""
        call = dict(kwargs)
        timeout = call.pop("timeout", None)
        unknown = sorted(set(call) - REQUEST_KEYS)
        if unknown:
            raise TypeError(
                f"TrtGateway: unexpected keyword argument(s) {unknown}; request fields: {sorted(REQUEST_KEYS)}"
            )
        defaults = {
            "model": self.model or None,
            "adapter": self.adapter,
            "temperature": self.temperature,
            "max_tokens": self._num_output(info),  # what `metadata` promised the prompt helper
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": self.stop or None,
        }
        params = {**defaults, **self.additional_kwargs, **call}
        if params.get("stop") == []:
            params["stop"] = None
        forced = params.get("tool_choice") not in (None, "auto", "none")  # the server guides a forced call
        if params.get("temperature") is None and (forced or any(params.get(k) is not None for k in GUIDED_KEYS)):
            # A structured call or a forced tool call with no temperature set is greedy: sampled (the server's
            # default, 1.0) a small model wanders inside open strings, and its seed follows the engine's arrival order.
            params["temperature"] = 0.0
        if "json_schema" in params and "json_schema" not in info.capabilities.guided:
            raise errors.Unimplemented(
                f"structured output needs guided decoding by json_schema, and model {info.name!r} on this gateway "
                f"({info.executor} executor) does not offer it (guided kinds: "
                f"{', '.join(info.capabilities.guided) or 'none'})",
                field="json_schema",
            )
        return {k: v for k, v in params.items() if v is not None}, timeout

    def _chat_prompt(self, info: ModelInfo, messages: Sequence[ChatMessage]) -> dict[str, Any]:
        if info.capabilities.chat_template:
            return {"messages": [tooling.gateway_message(i, m) for i, m in enumerate(messages)]}
        return {"text": self.messages_to_prompt(messages)}

    def _completion_prompt(self, prompt: str, formatted: bool) -> dict[str, Any]:
        return {"text": prompt if formatted else self.completion_to_prompt(prompt)}

    # -- shared helpers: one request each --------------------------------------------------------------------------
    # `prompt_of(info)` builds the prompt keywords (text or messages) once the model's info is known. Everything is
    # resolved when an entry point is called, so a bad argument fails there, not on the first iteration.

    def _prepare(self, prompt_of: PromptOf, kwargs: dict[str, Any]) -> _Request:
        info = self.model_info(kwargs.get("model") or None)
        params, timeout = self._params(info, kwargs)
        return _Request(info.name, prompt_of(info), params, timeout)

    async def _aprepare(self, prompt_of: PromptOf, kwargs: dict[str, Any]) -> _Request:
        info = await self.amodel_info(kwargs.get("model") or None)
        params, timeout = self._params(info, kwargs)
        return _Request(info.name, prompt_of(info), params, timeout)

    def _generate(self, prompt_of: PromptOf, kwargs: dict[str, Any]) -> tuple[Completion, dict[str, Any]]:
        r = self._prepare(prompt_of, kwargs)
        done = self.client.generate(**r.prompt, timeout=r.timeout, **r.params)
        _note_guided(r, done.finish_reason)
        return done, _raw(done, r)

    async def _agenerate(self, prompt_of: PromptOf, kwargs: dict[str, Any]) -> tuple[Completion, dict[str, Any]]:
        r = await self._aprepare(prompt_of, kwargs)
        done = await self.async_client.generate(**r.prompt, timeout=r.timeout, **r.params)
        _note_guided(r, done.finish_reason)
        return done, _raw(done, r)

    def _stream(self, prompt_of: PromptOf, kwargs: dict[str, Any]) -> Iterator[_Item]:
        r = self._prepare(prompt_of, kwargs)
        stream = self.client.stream(**r.prompt, timeout=r.timeout, **r.params)

        def items() -> Iterator[_Item]:
            text = reasoning = ""
            with stream:  # leaving early (break, close) cancels the RPC
                for chunk in stream:
                    text, reasoning = text + chunk.text, reasoning + chunk.reasoning
                    raw = None if chunk.finish_reason is None else _raw(chunk, r)
                    yield text, chunk.text, raw, chunk.tool_calls, reasoning

        return items()

    async def _astream(self, prompt_of: PromptOf, kwargs: dict[str, Any]) -> AsyncIterator[_Item]:
        r = await self._aprepare(prompt_of, kwargs)
        stream = self.async_client.stream(**r.prompt, timeout=r.timeout, **r.params)

        async def items() -> AsyncIterator[_Item]:
            text = reasoning = ""
            async with stream:
                async for chunk in stream:
                    text, reasoning = text + chunk.text, reasoning + chunk.reasoning
                    raw = None if chunk.finish_reason is None else _raw(chunk, r)
                    yield text, chunk.text, raw, chunk.tool_calls, reasoning

        return items()

    # -- the eight entry points -------------------------------------------------------------------------------------

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        done, raw = self._generate(lambda _info: self._completion_prompt(prompt, formatted), kwargs)
        return CompletionResponse(text=done.text, raw=raw)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        items = self._stream(lambda _info: self._completion_prompt(prompt, formatted), kwargs)

        def gen() -> CompletionResponseGen:
            for text, delta, raw, _calls, _reasoning in items:
                yield CompletionResponse(text=text, delta=delta, raw=raw)

        return gen()

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        done, raw = self._generate(lambda info: self._chat_prompt(info, messages), kwargs)
        return ChatResponse(message=tooling.assistant(done.text, done.tool_calls, done.reasoning), raw=raw)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        items = self._stream(lambda info: self._chat_prompt(info, messages), kwargs)

        def gen() -> ChatResponseGen:
            for text, delta, raw, calls, reasoning in items:
                yield ChatResponse(message=tooling.assistant(text, calls, reasoning), delta=delta, raw=raw)

        return gen()

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        done, raw = await self._agenerate(lambda _info: self._completion_prompt(prompt, formatted), kwargs)
        return CompletionResponse(text=done.text, raw=raw)

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        items = await self._astream(lambda _info: self._completion_prompt(prompt, formatted), kwargs)

        async def gen() -> CompletionResponseAsyncGen:
            async for text, delta, raw, _calls, _reasoning in items:
                yield CompletionResponse(text=text, delta=delta, raw=raw)

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        done, raw = await self._agenerate(lambda info: self._chat_prompt(info, messages), kwargs)
        return ChatResponse(message=tooling.assistant(done.text, done.tool_calls, done.reasoning), raw=raw)

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        items = await self._astream(lambda info: self._chat_prompt(info, messages), kwargs)

        async def gen() -> ChatResponseAsyncGen:
            async for text, delta, raw, calls, reasoning in items:
                yield ChatResponse(message=tooling.assistant(text, calls, reasoning), delta=delta, raw=raw)

        return gen()

    # -- function calling: the gateway's tools ---------------------------------------------------------------------

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: str | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """`chat` keywords that send `tools` to the gateway. `tool_required` (or tool_choice "required" / a tool's
        name) forces a call, constrained by the server's guided decoding; without `allow_parallel_tool_calls` a
        forced reply is exactly one call."""
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            user_msg = ChatMessage(role=MessageRole.USER, content=user_msg)
        if user_msg is not None:
            messages.append(user_msg)
        fields = tooling.request_fields(tools, tool_required, tool_choice, allow_parallel_tool_calls)
        return {"messages": messages, **fields, **kwargs}

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[BaseTool],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        return response if allow_parallel_tool_calls else tooling.only_first_call(response)

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        return tooling.selections(response, error_on_no_tool_call)

    # -- structured output: guided JSON decoding ----------------------------------------------------------------------

    def _guided(self, info: ModelInfo, output_cls: type[Model], llm_kwargs: dict[str, Any] | None) -> dict[str, Any]:
        kwargs = {**(llm_kwargs or {}), "json_schema": output_cls.model_json_schema()}
        self._params(info, {k: v for k, v in kwargs.items() if k in REQUEST_KEYS | {"timeout"}})  # refuses early
        return kwargs

    def structured_predict(
        self,
        output_cls: type[Model],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Model:
        """Like `LLM.structured_predict`, with the output constrained by the server's guided JSON decoding (greedy
        unless a temperature is set). A server without it refuses with `trt_gateway.errors.Unimplemented`; an
        output cut at `max_tokens` raises ValueError saying so (bound the schema's strings: `max_length`)."""
        kwargs = self._guided(self.model_info((llm_kwargs or {}).get("model")), output_cls, llm_kwargs)
        with _cut_off_reported(output_cls):
            return super().structured_predict(output_cls, prompt, llm_kwargs=kwargs, **prompt_args)

    async def astructured_predict(
        self,
        output_cls: type[Model],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Model:
        kwargs = self._guided(await self.amodel_info((llm_kwargs or {}).get("model")), output_cls, llm_kwargs)
        with _cut_off_reported(output_cls):
            return await super().astructured_predict(output_cls, prompt, llm_kwargs=kwargs, **prompt_args)

    def stream_structured_predict(
        self,
        output_cls: type[Model],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Generator[Any, None, None]:
        """Like `LLM.stream_structured_predict` (partial objects as the JSON grows), guided by the schema."""
        kwargs = self._guided(self.model_info((llm_kwargs or {}).get("model")), output_cls, llm_kwargs)
        return super().stream_structured_predict(output_cls, prompt, llm_kwargs=kwargs, **prompt_args)

    async def astream_structured_predict(
        self,
        output_cls: type[Model],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> AsyncGenerator[Any, None]:
        kwargs = self._guided(await self.amodel_info((llm_kwargs or {}).get("model")), output_cls, llm_kwargs)
        return await super().astream_structured_predict(output_cls, prompt, llm_kwargs=kwargs, **prompt_args)


def _note_guided(r: _Request, finish_reason: str | None) -> None:
    if any(k in r.params for k in GUIDED_KEYS):
        _GUIDED_FINISH.set(finish_reason)


@contextmanager
def _cut_off_reported(output_cls: type) -> Iterator[None]:
    """LlamaIndex's parser reports a truncated JSON output as a generic ValueError; say why when it was cut."""
    token = _GUIDED_FINISH.set(None)
    try:
        yield
    except ValueError as exc:
        if _GUIDED_FINISH.get() != "length":
            raise
        raise ValueError(
            f"structured output for {output_cls.__name__} was cut off at max_tokens before its JSON was complete: "
            "raise max_tokens, or bound the schema's strings and arrays (pydantic Field(max_length=...))"
        ) from exc
    finally:
        _GUIDED_FINISH.reset(token)


def _raw(done: Completion | StreamChunk, r: _Request) -> dict[str, Any]:
    """The `raw` dict: usage in the keys LlamaIndex's TokenCountingHandler reads, plus the finish metadata."""
    raw: dict[str, Any] = {
        "finish_reason": done.finish_reason,
        "model": r.params.get("model") or r.model,
        "adapter": r.params.get("adapter"),
        "request_id": done.request_id,
        "usage": None,
    }
    if done.usage is not None:
        u = done.usage
        raw["usage"] = {
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "total_tokens": u.prompt_tokens + u.completion_tokens,
            "cached_tokens": u.cached_tokens,
            "draft_tokens": u.draft_tokens,
            "accepted_tokens": u.accepted_tokens,
        }
    if done.matched_stop:
        raw["matched_stop"] = done.matched_stop
    if done.timings is not None:
        raw["timings"] = {
            "queue_time_ms": done.timings.queue_time_ms,
            "time_to_first_token_ms": done.timings.time_to_first_token_ms,
            "total_time_ms": done.timings.total_time_ms,
        }
    return raw
