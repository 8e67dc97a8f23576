"""`ChatTrtGateway`: a LangChain chat model over the trt-gateway client.

Messages go to the gateway as {"role", "content"} pairs (an AI message's tool calls and a tool result's call id with
them) and the server applies the model's chat template. Streams are the gateway's own token deltas; the final chunk
alone carries `usage_metadata`, the finish metadata and the tool calls. Tools are the gateway's own (the server
renders them, parses calls and enforces forced ones: _tools.py); structured output uses its guided decoding
(_structured.py). Reasoning the server splits off (`server.reasoning_parser`) is in
`additional_kwargs["reasoning_content"]`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ChatMessage, ToolMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema
from pydantic import BaseModel, model_validator
from trt_gateway.client import Completion

from langchain_trt_gateway._common import (
    GatewayFields,
    Piece,
    ResolvedCall,
    finish_metadata,
    token_usage,
    usage_metadata,
)
from langchain_trt_gateway._structured import GuidedJsonOutputParser, is_pydantic_class
from langchain_trt_gateway._tools import ToolPlan, convert_calls, format_tools, openai_tool_calls
from langchain_trt_gateway._version import __version__

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "function"}
StructuredMethod = Literal["json_schema", "json_mode", "function_calling"]


# Content blocks that restate an AI message's tool calls (Anthropic's "tool_use", v1 "tool_call"): the calls are
# sent from `tool_calls`, so these are skipped rather than refused.
_TOOL_CALL_BLOCKS = frozenset({"tool_use", "tool_call", "tool_call_chunk", "function_call"})


def to_gateway_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages as the gateway's messages. Text only: the gateway serves text models.

    An AI message's tool calls go with it (OpenAI's shape); a tool result goes as a "tool" message with the id of the
    call it answers. The server renders both through the chat template (or, for a template that knows nothing of
    tools, as text the model can read).
    """
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        role = m.role if isinstance(m, ChatMessage) else _ROLES.get(m.type)
        if role is None:
            raise ValueError(f"messages[{i}]: message type {m.type!r} has no chat role on the gateway")
        if isinstance(m.content, list):
            kinds = {b.get("type") if isinstance(b, dict) else "text" for b in m.content} - {"text"}
            if isinstance(m, AIMessage):
                kinds -= _TOOL_CALL_BLOCKS
            if kinds:
                raise ValueError(f"messages[{i}]: the gateway takes text only, not {sorted(map(str, kinds))} blocks")
        message: dict[str, Any] = {"role": role, "content": str(m.text)}
        if isinstance(m, AIMessage) and m.tool_calls:
            message["tool_calls"] = openai_tool_calls(m.tool_calls)
        if isinstance(m, ToolMessage):
            message["tool_call_id"] = m.tool_call_id
        out.append(message)
    return out


class ChatTrtGateway(GatewayFields, BaseChatModel):
    """A chat model served by a trt-gateway.

        from langchain_trt_gateway import ChatTrtGateway

        llm = ChatTrtGateway(target="localhost:50051", model="demo", max_tokens=64)
        llm.invoke("Hello")
        for chunk in llm.bind(adapter="sql-lora").stream("Write a query"):
            print(chunk.text, end="")

    Per-call keyword arguments (`invoke(..., model=..., adapter=..., temperature=...)` or `.bind(...)`) are request
    fields of the gateway client and override the constructor's. `with_structured_output` and forced tool calls
    (`bind_tools(..., tool_choice="any" | <name>)`) use the server's guided decoding by JSON schema; a server
    without it refuses with `trt_gateway.errors.Unimplemented`. A guided call with no temperature set is greedy.
    """

    streaming: bool = False
    """Make `invoke` go through the stream (so streaming callbacks see tokens)."""

    @model_validator(mode="after")
    def _set_trt_gateway_version(self) -> ChatTrtGateway:
        self._add_version("langchain-trt-gateway", __version__)
        return self

    @property
    def _llm_type(self) -> str:
        return "trt-gateway-chat"

    @property
    def _identifying_params(self) -> Mapping[str, Any]:
        return self._identifying()

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        tool_keys = ("tools", "tool_choice", "parallel_tool_calls")  # bound by `bind_tools`; not request fields
        return self._ls_params(stop, {k: v for k, v in kwargs.items() if k not in tool_keys}, "chat")

    # -- generation -----------------------------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call, prompt, plan = self._prepare(messages, stop, kwargs)
        name = self._model_name(call)
        done = self.client.generate(messages=prompt, timeout=call.timeout, **call.params)
        return _chat_result(done, name, call, plan)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call, prompt, plan = self._prepare(messages, stop, kwargs)
        name = await self._amodel_name(call)
        done = await self.async_client.generate(messages=prompt, timeout=call.timeout, **call.params)
        return _chat_result(done, name, call, plan)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        call, prompt, plan = self._prepare(messages, stop, kwargs)
        reader = _ToolStream(plan)
        for piece in self._stream_pieces(call, messages=prompt):
            for chunk in reader.feed(piece):
                if run_manager:
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        call, prompt, plan = self._prepare(messages, stop, kwargs)
        reader = _ToolStream(plan)
        async for piece in self._astream_pieces(call, messages=prompt):
            for chunk in reader.feed(piece):
                if run_manager:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

    def _prepare(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[ResolvedCall, list[dict[str, Any]], ToolPlan | None]:
        """One call: its request fields (bound tools among them), its gateway messages and its tool plan."""
        kwargs = dict(kwargs)
        plan = ToolPlan.from_kwargs(kwargs.pop("tools", None), kwargs.pop("tool_choice", None))
        if plan is None:
            kwargs.pop("parallel_tool_calls", None)
        if plan is not None:
            kwargs.update(plan.request_fields())
        return self._resolve(stop, kwargs), to_gateway_messages(messages), plan

    # -- tools ------------------------------------------------------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (functions, `BaseTool`s, pydantic classes, JSON schemas or OpenAI tool dicts).

        The tools and the choice go to the gateway, which renders the tools through the model's chat template and
        parses the calls out of its reply. `tool_choice`: "any" / "required" / True (call one of the tools), a
        tool's name (call that one; also {"type": "function", "function": {"name": ...}}), "auto" / None (the model
        decides), "none" / False (no call). A forced call is constrained by the server's guided decoding to the
        tool's parameters schema, so it always parses and validates (the model needs guided `json_schema`); "auto"
        is not constrained. `parallel_tool_calls`: with "any", False (the default) constrains the reply to exactly
        one call, True to one or more. Calls come back in `AIMessage.tool_calls`, each with the server's id.
        """
        formatted = format_tools(tools)
        ToolPlan.from_kwargs(formatted, tool_choice)  # refuses a bad tool_choice now, not at the first call
        return super().bind(tools=formatted, tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls, **kwargs)

    # -- structured output ----------------------------------------------------------------------------------------

    def with_structured_output(  # type: ignore[override]
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        method: StructuredMethod = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Constrain the output to `schema` with the gateway's guided decoding (`json_schema` request field).

        Every `method` maps onto guided decoding, which is always strict: "json_schema" and "function_calling" use
        the schema (function calling needs no tool-call wrapper when the output itself is constrained), "json_mode"
        any JSON object (the schema, if given, only parses). A pydantic class (2 or v1) parses into an instance,
        anything else into a dict. With no temperature set the call is greedy. Every token follows the schema, but
        the output only completes if the model ends it within `max_tokens`: bound strings and arrays
        (`Field(max_length=...)`) for small models. An output cut short raises `OutputParserException` saying so
        (in `parsing_error` with `include_raw=True`); an invalid schema is refused by the server with
        `trt_gateway.errors.InvalidArgument` (field "guided.json_schema", with the reason). The capability is
        checked on the first call against the server's model info: a server without guided JSON decoding gets
        `trt_gateway.errors.Unimplemented`.
        """
        if kwargs:
            raise ValueError(f"with_structured_output: unexpected argument(s) {sorted(kwargs)}")
        if method not in ("json_schema", "json_mode", "function_calling"):
            raise ValueError(f"method must be 'json_schema', 'json_mode' or 'function_calling', got {method!r}")
        if schema is None and method != "json_mode":
            raise ValueError(f"method={method!r} needs a schema")
        is_pydantic = is_pydantic_class(schema)
        if method == "json_mode":
            guided: dict[str, Any] = {"type": "object"}
        elif isinstance(schema, type) and issubclass(schema, BaseModel):
            guided = schema.model_json_schema()  # keeps $defs for nested models
        else:
            guided = convert_to_json_schema(schema)  # type: ignore[arg-type]
        llm = self.bind(
            json_schema=guided,
            ls_structured_output_format={
                "kwargs": {"method": method, "strict": strict},
                "schema": convert_to_json_schema(schema) if schema is not None else guided,
            },
        )
        parser = GuidedJsonOutputParser(pydantic_object=schema if is_pydantic else None)
        if not include_raw:
            return llm | parser
        parse = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        fallback = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parse.with_fallbacks([fallback], exception_key="parsing_error")


def _reasoning(text: str) -> dict[str, Any]:
    return {"reasoning_content": text} if text else {}


def _chat_chunk(piece: Piece) -> ChatGenerationChunk:
    if piece.metadata is None:
        return ChatGenerationChunk(message=AIMessageChunk(content=piece.text, additional_kwargs=_reasoning(piece.reasoning)))
    message = AIMessageChunk(
        content=piece.text,
        additional_kwargs=_reasoning(piece.reasoning),
        usage_metadata=usage_metadata(piece.usage) if piece.usage is not None else None,
        response_metadata=piece.metadata,
        chunk_position="last",
    )
    return ChatGenerationChunk(message=message)


class _ToolStream:
    """Turns a call's pieces into chunks. The server streams content as it is certain not to be part of a call and
    sends the calls on the last chunk, which becomes `tool_call_chunks` (each complete, with its id)."""

    def __init__(self, plan: ToolPlan | None) -> None:
        self.plan = plan
        self.text = ""  # content so far: a forced call cut short is reported with its text

    def feed(self, piece: Piece) -> list[ChatGenerationChunk]:
        self.text += piece.text
        if piece.metadata is None or self.plan is None:
            return [_chat_chunk(piece)]
        _, calls, _invalid = self.plan.read(self.text, piece.tool_calls, piece.metadata.get("finish_reason"))
        # Only complete calls go out as chunks: LangChain "repairs" the arguments of a chunked call when it merges
        # chunks, so a cut-off call stays text here (invoke also reports it in `invalid_tool_calls`).
        chunks = [
            tool_call_chunk(name=c["name"], args=json.dumps(c["args"], ensure_ascii=False), id=c["id"], index=i)
            for i, c in enumerate(calls)
        ]
        message = AIMessageChunk(
            content=piece.text,
            additional_kwargs=_reasoning(piece.reasoning),
            tool_call_chunks=chunks,
            usage_metadata=usage_metadata(piece.usage) if piece.usage is not None else None,
            response_metadata=piece.metadata,
            chunk_position="last",
        )
        return [ChatGenerationChunk(message=message)]


def _chat_result(done: Completion, name: str, call: ResolvedCall, plan: ToolPlan | None = None) -> ChatResult:
    md = finish_metadata(
        model_name=name,
        adapter=call.adapter,
        finish_reason=done.finish_reason,
        matched_stop=done.matched_stop,
        usage=done.usage,
        timings=done.timings,
        request_id=done.request_id,
    )
    if plan is not None:
        content, calls, invalid = plan.read(done.text, done.tool_calls, done.finish_reason)
    else:
        content, (calls, invalid) = done.text, convert_calls(done.tool_calls)
    message = AIMessage(
        content=content,
        additional_kwargs=_reasoning(done.reasoning),
        tool_calls=calls,
        invalid_tool_calls=invalid,
        usage_metadata=usage_metadata(done.usage),
        response_metadata=md,
    )
    return ChatResult(
        generations=[ChatGeneration(message=message)],
        llm_output={"token_usage": token_usage(done.usage), "model_name": name},
    )
