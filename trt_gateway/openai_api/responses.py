"""`TokenDelta`s -> OpenAI JSON: whole responses, streamed chunks (server-sent events) and error bodies.

Finish reasons: length -> "length"; a stop string or stop token (EOS included) -> "stop"; an aborted request ->
"abort" (vLLM's spelling). What matched rides along as vLLM's `stop_reason` (the string, or the token id).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from trt_gateway import errors
from trt_gateway.openai_api.protocol import param_name
from trt_gateway.types import Finish, FinishReason, TokenDelta, TokenLogprob, ToolCall, Usage

FINISH = {
    FinishReason.LENGTH: "length",
    FinishReason.STOP_TOKEN: "stop",
    FinishReason.STOP_STRING: "stop",
    FinishReason.CANCELLED: "abort",
    FinishReason.ERROR: "error",
}
DONE = b"data: [DONE]\n\n"


def sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def error_body(error: BaseException) -> tuple[int, dict[str, Any]]:
    """(HTTP status, {"error": {...}}) from the one error table. Bugs say nothing about themselves (500)."""
    row = errors.row_for(error)
    if isinstance(error, errors.GatewayError) and row.cls is not errors.Internal:
        param = param_name(error.field)
        message = error.message
        if error.field and param and param != error.field:  # say it in the OpenAI parameter's name
            message = message.replace(error.field, param, 1)
    else:
        param, message = None, "internal error (the server log has the details)"
    return row.http_status, {"error": {"message": message, "type": row.http_type, "param": param,
                                       "code": row.grpc_code.name.lower()}}


def finish_fields(finish: Finish | None, calls: Sequence[ToolCall] = ()) -> tuple[str | None, Any]:
    """(finish_reason, stop_reason). An output that ended in tool calls says so, as OpenAI's API does."""
    if finish is None:
        return None, None
    stop: Any = finish.matched_stop or finish.matched_stop_token_id
    if calls and finish.reason in (FinishReason.STOP_TOKEN, FinishReason.STOP_STRING):
        return "tool_calls", stop
    return FINISH[finish.reason], stop


def tool_calls_json(calls: Sequence[ToolCall], streamed: bool = False) -> list[dict[str, Any]]:
    out = []
    for i, c in enumerate(calls):
        call: dict[str, Any] = {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        out.append({"index": i, **call} if streamed else call)
    return out


def usage(outputs: Sequence[Usage]) -> dict[str, Any]:
    prompt = max((u.prompt_tokens for u in outputs), default=0)
    completion = sum(u.completion_tokens for u in outputs)
    cached = max((u.cached_tokens for u in outputs), default=0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def chat_logprobs(items: Sequence[TokenLogprob]) -> dict[str, Any]:
    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return {"content": [{**entry(lp.token, lp.logprob), "top_logprobs": [entry(a.token, a.logprob) for a in lp.top]}
                        for lp in items]}


def completion_logprobs(items: Sequence[TokenLogprob], offset: int) -> dict[str, Any]:
    offsets, at = [], offset
    for lp in items:
        offsets.append(at)
        at += len(lp.token)
    return {
        "tokens": [lp.token for lp in items],
        "token_logprobs": [lp.logprob for lp in items],
        "top_logprobs": [{a.token: a.logprob for a in lp.top} for lp in items],
        "text_offset": offsets,
    }


@dataclass
class Output:
    """One choice, folded from its deltas (for a response that is not streamed)."""

    text: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    finish: Finish | None = None

    def add(self, delta: TokenDelta) -> None:
        self.text.append(delta.text)
        self.reasoning.append(delta.reasoning)
        self.logprobs.extend(delta.logprobs)
        self.tool_calls.extend(delta.tool_calls)
        if delta.finish is not None:
            self.finish = delta.finish


class Shape:
    """The JSON of one response kind: chat completion or text completion."""

    def __init__(self, chat: bool, request_id: str, model: str, logprobs: bool) -> None:
        self.chat = chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + request_id
        self.model = model
        self.created = int(time.time())
        self.logprobs = logprobs
        self.offsets: dict[int, int] = {}  # completion logprobs: text offset so far per choice

    def _head(self, chunk: bool) -> dict[str, Any]:
        kind = ("chat.completion.chunk" if chunk else "chat.completion") if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def whole(self, outputs: Sequence[Output], prompt_text: str = "") -> dict[str, Any]:
        choices = []
        for i, out in enumerate(outputs):
            reason, stop = finish_fields(out.finish, out.tool_calls)
            text = "".join(out.text)
            choice: dict[str, Any] = {"index": i, "finish_reason": reason, "stop_reason": stop}
            if self.chat:
                choice["message"] = {"role": "assistant", "content": text if text or not out.tool_calls else None}
                thought = "".join(out.reasoning)
                if thought:  # vLLM's field for the reasoning split off by the server's reasoning parser
                    choice["message"]["reasoning_content"] = thought
                if out.tool_calls:
                    choice["message"]["tool_calls"] = tool_calls_json(out.tool_calls)
                choice["logprobs"] = chat_logprobs(out.logprobs) if self.logprobs else None
            else:
                choice["text"] = prompt_text + text
                choice["logprobs"] = completion_logprobs(out.logprobs, len(prompt_text)) if self.logprobs else None
            choices.append(choice)
        finished = [o.finish.usage for o in outputs if o.finish is not None]
        return {**self._head(False), "choices": choices, "usage": usage(finished)}

    def first_chunk(self, index: int) -> dict[str, Any]:
        """Chat streams open each choice with the assistant role."""
        delta = {"role": "assistant", "content": ""}
        return {**self._head(True), "choices": [{"index": index, "delta": delta, "logprobs": None,
                                                  "finish_reason": None}]}

    def chunk(self, index: int, delta: TokenDelta, prefix: str = "") -> dict[str, Any]:
        reason, stop = finish_fields(delta.finish, delta.tool_calls)
        choice: dict[str, Any] = {"index": index, "finish_reason": reason}
        if reason is not None:
            choice["stop_reason"] = stop
        text = prefix + delta.text
        if self.chat:
            bare = reason is None and not delta.tool_calls and not delta.reasoning
            choice["delta"] = {"content": text} if text or bare else {}
            if delta.reasoning:
                choice["delta"]["reasoning_content"] = delta.reasoning
            if delta.tool_calls:
                choice["delta"]["tool_calls"] = tool_calls_json(delta.tool_calls, streamed=True)
            choice["logprobs"] = chat_logprobs(delta.logprobs) if self.logprobs and delta.logprobs else None
        else:
            choice["text"] = text
            at = self.offsets.get(index, len(prefix))
            choice["logprobs"] = completion_logprobs(delta.logprobs, at) if self.logprobs else None
            self.offsets[index] = at + sum(len(lp.token) for lp in delta.logprobs)
        return {**self._head(True), "choices": [choice]}

    def usage_chunk(self, outputs: Sequence[Usage]) -> dict[str, Any]:
        return {**self._head(True), "choices": [], "usage": usage(outputs)}
