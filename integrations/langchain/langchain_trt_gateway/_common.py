"""What `ChatTrtGateway` and `TrtGatewayLLM` share: connection and sampling fields, the lazily built gateway clients,
resolving one call (instance defaults < `.bind` / per-call keyword arguments), and the metadata of a finished output.

Nothing here connects at construction: the clients are built on first use, because a model object is often built
long before it is called (and LangChain's unit tests forbid sockets).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from langchain_core.language_models import LangSmithParams
from langchain_core.messages.ai import UsageMetadata
from langchain_core.utils import from_env, secret_from_env
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, field_validator
from trt_gateway import errors
from trt_gateway.client import (
    CALL_FIELDS,
    AsyncGatewayClient,
    GatewayClient,
    LazyClients,
    ModelInfo,
    SharedClients,
    StreamChunk,
    Timings,
    Usage,
    check_call_fields,
)
from trt_gateway.types import ToolCall

PROVIDER = "trt_gateway"
DEFAULT_TARGET = "localhost:50051"

REQUEST_KEYS = CALL_FIELDS  # request fields a call, `.bind(...)` or `model_kwargs` may set
_CALL_OPTIONS = frozenset({"timeout"})  # per-call options that are not request fields
_IGNORED = frozenset({"stream"})  # LangChain's own streaming switch; it reaches `_generate` as a kwarg
GUIDED_KEYS = frozenset({"json_schema", "regex", "grammar", "choice"})  # guided decoding: structured output
UNFORCED_TOOL_CHOICES = (None, "auto", "none")  # any other tool_choice forces a call, which the server guides


@dataclass(frozen=True)
class ResolvedCall:
    """One call's request keyword arguments (only those set) and its deadline in seconds (None: the client's)."""

    params: dict[str, Any]
    timeout: float | None = None

    @property
    def model(self) -> str:
        return str(self.params.get("model") or "")

    @property
    def adapter(self) -> str | None:
        return self.params.get("adapter") or None


@dataclass(frozen=True)
class Piece:
    """One streamed text delta. The last piece of an output also carries its finish metadata and usage."""

    text: str
    metadata: dict[str, Any] | None = None
    usage: Usage | None = None
    reasoning: str = ""  # reasoning text the server split off (servers with a reasoning parser)
    tool_calls: tuple[ToolCall, ...] = ()  # on the last piece: the calls the server parsed


class GatewayFields(BaseModel):
    """Fields and plumbing common to the chat model and the LLM (a pydantic mixin, listed before the LangChain base)."""

    model_config = ConfigDict(populate_by_name=True)

    target: str = Field(default_factory=from_env("TRT_GATEWAY_TARGET", default=DEFAULT_TARGET))
    """The gateway's "host:port" (default: env `TRT_GATEWAY_TARGET`, else "localhost:50051")."""
    model: str = ""
    """The served model name; "" uses the server's default model. A per-call `model=` overrides it."""
    adapter: str | None = None
    """A LoRA adapter loaded on the server. A per-call `adapter=` (or `.bind(adapter=...)`) overrides it."""
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    """Default stop sequences; a per-call `stop` replaces them, and `[]` means none."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Further request fields of the gateway client (`top_k`, `min_p`, `repetition_penalty`, `speculative`, ...)."""

    timeout: float | None = None
    """Seconds for a whole call, retries included (None: no deadline). A per-call `timeout=` overrides it."""
    max_retries: int = 3
    """Retries of UNAVAILABLE / RESOURCE_EXHAUSTED before the first token (never after output was produced)."""
    api_key: SecretStr | None = Field(default_factory=secret_from_env("TRT_GATEWAY_API_KEY", default=None))
    """Sent as "authorization: Bearer <key>" (default: env `TRT_GATEWAY_API_KEY`)."""
    tls: bool = False
    """Use TLS with the system roots; implied by any certificate option below."""
    root_certificates: str | None = None
    """CA bundle: a PEM file path or PEM text."""
    client_certificate: str | None = None
    """mTLS certificate chain (path or PEM), together with `client_key`."""
    client_key: SecretStr | None = None
    """mTLS private key (path or PEM)."""
    server_name_override: str | None = None
    """TLS host name to check instead of the target's (IP targets, tests)."""

    _clients: LazyClients | None = PrivateAttr(default=None)
    clients: ClassVar[SharedClients] = SharedClients()  # LazyClients for this target, built on first use

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("model_kwargs")
    @classmethod
    def _known_request_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_call_fields(value, "model_kwargs")
        return value

    # -- clients --------------------------------------------------------------------------------------------------

    @property
    def client(self) -> GatewayClient:
        """The blocking gateway client."""
        return self.clients.sync

    @property
    def async_client(self) -> AsyncGatewayClient:
        """The asyncio gateway client; it opens one channel per event loop, on first use in that loop."""
        return self.clients.aio

    # -- one call -------------------------------------------------------------------------------------------------

    def _resolve(self, stop: list[str] | None, kwargs: Mapping[str, Any]) -> ResolvedCall:
        """Instance defaults, then `model_kwargs`, then per-call keywords (a per-call None removes a default).

        A guided request with no temperature set anywhere is greedy: structured output wants the most likely valid
        value, and sampling makes a small model wander inside open strings until `max_tokens`. A forced tool call
        (tool_choice "required" or a tool's name) is guided too, by the server: without this default it would be
        sampled at the server's temperature 1 with a seed the engine draws per request, so the same call could
        pick different arguments from one request to the next.
        """
        unknown = sorted(set(kwargs) - REQUEST_KEYS - _CALL_OPTIONS - _IGNORED)
        if unknown:
            raise TypeError(
                f"{type(self).__name__}: unexpected keyword argument(s) {unknown}; "
                f"request fields are {sorted(REQUEST_KEYS)}"
            )
        defaults = {
            "model": self.model or None,
            "adapter": self.adapter,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "seed": self.seed,
        }
        params = {**defaults, **self.model_kwargs, **{k: v for k, v in kwargs.items() if k in REQUEST_KEYS}}
        stops = stop if stop is not None else params.pop("stop", None) or self.stop
        params["stop"] = list(stops) if stops else None
        guided = any(params.get(k) is not None for k in GUIDED_KEYS)
        if params.get("temperature") is None and (guided or params.get("tool_choice") not in UNFORCED_TOOL_CHOICES):
            params["temperature"] = 0.0
        return ResolvedCall({k: v for k, v in params.items() if v is not None}, kwargs.get("timeout"))

    def model_info(self, model: str | None = None) -> ModelInfo:
        """The server's description of `model` (default: this object's), cached: context window, capabilities."""
        key = self.model if model is None else model
        return self.clients.model_info(key)

    async def amodel_info(self, model: str | None = None) -> ModelInfo:
        key = self.model if model is None else model
        return await self.clients.amodel_info(key)

    def _needs_info(self, call: ResolvedCall) -> bool:
        # The server's answer is needed for the served name when no model was named, and for the capability check
        # that makes a structured-output request fail with a clear message instead of a generic UNIMPLEMENTED.
        return not call.model or "json_schema" in call.params

    def _model_name(self, call: ResolvedCall) -> str:
        if not self._needs_info(call):
            return call.model
        return _check_guided(self.model_info(call.model), call)

    async def _amodel_name(self, call: ResolvedCall) -> str:
        if not self._needs_info(call):
            return call.model
        return _check_guided(await self.amodel_info(call.model), call)

    # -- generation, shared by the chat model and the LLM -------------------------------------------------------------

    def _stream_pieces(self, call: ResolvedCall, **prompt: Any) -> Iterator[Piece]:
        name = self._model_name(call)
        with self.client.stream(**prompt, timeout=call.timeout, **call.params) as stream:
            for chunk in stream:
                if chunk.index != 0:
                    continue
                yield _piece(chunk, name, call)

    async def _astream_pieces(self, call: ResolvedCall, **prompt: Any) -> AsyncIterator[Piece]:
        name = await self._amodel_name(call)
        async with self.async_client.stream(**prompt, timeout=call.timeout, **call.params) as stream:
            async for chunk in stream:
                if chunk.index != 0:
                    continue
                yield _piece(chunk, name, call)

    def _ls_params(
        self, stop: list[str] | None, kwargs: dict[str, Any], model_type: Literal["chat", "llm"]
    ) -> LangSmithParams:
        """LangSmith's standard params for one call (`_get_ls_params` of both classes)."""
        call = self._resolve(stop, kwargs)
        params = LangSmithParams(ls_provider=PROVIDER, ls_model_name=call.model or "default", ls_model_type=model_type)
        for key in ("temperature", "max_tokens", "stop"):
            if key in call.params:
                params[f"ls_{key}"] = call.params[key]  # type: ignore[literal-required]
        return params

    def _identifying(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "model": self.model,
            "adapter": self.adapter,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": self.stop,
            **self.model_kwargs,
        }


def _check_guided(info: ModelInfo, call: ResolvedCall) -> str:
    if "json_schema" in call.params and "json_schema" not in info.capabilities.guided:
        offered = ", ".join(info.capabilities.guided) or "none"
        raise errors.Unimplemented(
            f"structured output needs guided decoding by json_schema, and model {info.name!r} on this gateway "
            f"({info.executor} executor) does not offer it (guided kinds: {offered})",
            field="json_schema",
        )
    return call.model or info.name


def _piece(chunk: StreamChunk, name: str, call: ResolvedCall) -> Piece:
    if chunk.finish_reason is None:
        return Piece(chunk.text, reasoning=chunk.reasoning)
    md = finish_metadata(
        model_name=name,
        adapter=call.adapter,
        finish_reason=chunk.finish_reason,
        matched_stop=chunk.matched_stop,
        usage=chunk.usage,
        timings=chunk.timings,
        request_id=chunk.request_id,
    )
    return Piece(chunk.text, md, chunk.usage, chunk.reasoning, chunk.tool_calls)


def finish_metadata(
    *,
    model_name: str,
    adapter: str | None,
    finish_reason: str | None,
    matched_stop: str | None,
    usage: Usage | None,
    timings: Timings | None,
    request_id: str,
) -> dict[str, Any]:
    """The metadata of a finished output; it goes on the final chunk only (LangChain sums or concatenates repeated
    keys when it merges chunks)."""
    md: dict[str, Any] = {"finish_reason": finish_reason, "model_name": model_name, "model_provider": PROVIDER}
    if matched_stop:
        md["stop_sequence"] = matched_stop
    if adapter:
        md["adapter"] = adapter
    if usage is not None and usage.draft_tokens:
        md["speculative"] = {
            "draft_tokens": usage.draft_tokens,
            "accepted_tokens": usage.accepted_tokens,
            "acceptance_rate": usage.accepted_tokens / usage.draft_tokens,
        }
    if timings is not None:
        md["timings"] = {
            "queue_time_ms": timings.queue_time_ms,
            "time_to_first_token_ms": timings.time_to_first_token_ms,
            "total_time_ms": timings.total_time_ms,
        }
    if request_id:
        md["request_id"] = request_id
    return md


def usage_metadata(usage: Usage) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        total_tokens=usage.prompt_tokens + usage.completion_tokens,
        input_token_details={"cache_read": usage.cached_tokens},
    )


def token_usage(usage: Usage) -> dict[str, int]:
    """The `llm_output["token_usage"]` shape of LangChain's own integrations."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }
