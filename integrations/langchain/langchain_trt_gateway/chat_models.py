"""`ChatTrtGateway`: a LangChain chat model over the trt-gateway client.

Messages go to the gateway as {"role", "content"} pairs and the server applies the model's chat template. Streams
are the gateway's own token deltas; the final chunk alone carries `usage_metadata` and the finish metadata.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ChatMessage
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
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
from langchain_trt_gateway._version import __version__

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "function"}
StructuredMethod = Literal["json_schema", "json_mode", "function_calling"]


def to_gateway_messages(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages as the gateway's {"role", "content"} pairs. Text only: the gateway serves text models."""
    out = []
    for i, m in enumerate(messages):
        role = m.role if isinstance(m, ChatMessage) else _ROLES.get(m.type)
        if role is None:
            raise ValueError(f"messages[{i}]: message type {m.type!r} has no chat role on the gateway")
        if isinstance(m.content, list):
            kinds = {b.get("type") if isinstance(b, dict) else "text" for b in m.content} - {"text"}
            if kinds:
                raise ValueError(f"messages[{i}]: the gateway takes text only, not {sorted(map(str, kinds))} blocks")
        out.append({"role": role, "content": m.text})
    return out


class ChatTrtGateway(GatewayFields, BaseChatModel):
    """A chat model served by a trt-gateway.

        from langchain_trt_gateway import ChatTrtGateway

        llm = ChatTrtGateway(target="localhost:50051", model="demo", max_tokens=64)
        llm.invoke("Hello")
        for chunk in llm.bind(adapter="sql-lora").stream("Write a query"):
            print(chunk.text, end="")

    Per-call keyword arguments (`invoke(..., model=..., adapter=..., temperature=...)` or `.bind(...)`) are request
    fields of the gateway client and override the constructor's. `with_structured_output` uses the server's guided
    decoding by JSON schema; a server without it refuses with `trt_gateway.errors.Unimplemented`.
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
        return self._ls_params(stop, kwargs, "chat")

    # -- generation -----------------------------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._resolve(stop, kwargs)
        name = self._model_name(call)
        done = self.client.generate(messages=to_gateway_messages(messages), timeout=call.timeout, **call.params)
        return _chat_result(done, name, call)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._resolve(stop, kwargs)
        name = await self._amodel_name(call)
        done = await self.async_client.generate(
            messages=to_gateway_messages(messages), timeout=call.timeout, **call.params
        )
        return _chat_result(done, name, call)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        call = self._resolve(stop, kwargs)
        for piece in self._stream_pieces(call, messages=to_gateway_messages(messages)):
            chunk = _chat_chunk(piece)
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
        call = self._resolve(stop, kwargs)
        async for piece in self._astream_pieces(call, messages=to_gateway_messages(messages)):
            chunk = _chat_chunk(piece)
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

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
        the schema, "json_mode" any JSON object (the schema, if given, only parses). A pydantic class parses into an
        instance, anything else into a dict. The capability is checked on the first call against the server's model
        info, and a server without guided JSON decoding gets a clear `trt_gateway.errors.Unimplemented`.
        """
        if kwargs:
            raise ValueError(f"with_structured_output: unexpected argument(s) {sorted(kwargs)}")
        if method not in ("json_schema", "json_mode", "function_calling"):
            raise ValueError(f"method must be 'json_schema', 'json_mode' or 'function_calling', got {method!r}")
        if schema is None and method != "json_mode":
            raise ValueError(f"method={method!r} needs a schema")
        is_pydantic = isinstance(schema, type) and issubclass(schema, BaseModel)
        if method == "json_mode":
            guided: dict[str, Any] = {"type": "object"}
        elif is_pydantic:
            guided = schema.model_json_schema()  # type: ignore[union-attr]  # keeps $defs for nested models
        else:
            guided = convert_to_json_schema(schema)  # type: ignore[arg-type]
        llm = self.bind(
            json_schema=guided,
            ls_structured_output_format={
                "kwargs": {"method": method, "strict": strict},
                "schema": convert_to_json_schema(schema) if schema is not None else guided,
            },
        )
        parser: Runnable[Any, Any] = (
            PydanticOutputParser(pydantic_object=schema) if is_pydantic else JsonOutputParser()  # type: ignore[arg-type]
        )
        if not include_raw:
            return llm | parser
        parse = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        fallback = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parse.with_fallbacks([fallback], exception_key="parsing_error")


def _chat_chunk(piece: Piece) -> ChatGenerationChunk:
    if piece.metadata is None:
        return ChatGenerationChunk(message=AIMessageChunk(content=piece.text))
    message = AIMessageChunk(
        content=piece.text,
        usage_metadata=usage_metadata(piece.usage) if piece.usage is not None else None,
        response_metadata=piece.metadata,
        chunk_position="last",
    )
    return ChatGenerationChunk(message=message)


def _chat_result(done: Completion, name: str, call: ResolvedCall) -> ChatResult:
    md = finish_metadata(
        model_name=name,
        adapter=call.adapter,
        finish_reason=done.finish_reason,
        matched_stop=done.matched_stop,
        usage=done.usage,
        timings=done.timings,
        request_id=done.request_id,
    )
    message = AIMessage(content=done.text, usage_metadata=usage_metadata(done.usage), response_metadata=md)
    return ChatResult(
        generations=[ChatGeneration(message=message)],
        llm_output={"token_usage": token_usage(done.usage), "model_name": name},
    )
