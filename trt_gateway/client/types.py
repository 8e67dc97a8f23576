"""What the client returns: small frozen dataclasses, never protobuf messages.

Backend-neutral pieces (`Usage`, `TokenLogprob`, `PromptInfo`, `AdapterInfo`, `Capabilities`) are reused from
`trt_gateway.types`; the shapes below exist only on the wire side (a whole completion, one stream chunk, timings,
the limits a server advertises). `finish_reason` is a plain string, one of the `FinishReason` values ("length",
"stop_token", "stop_string", "cancelled", "error"), or None while an output is unfinished.
"""

from __future__ import annotations

from dataclasses import dataclass

from trt_gateway.types import Capabilities, PromptInfo, TokenLogprob, ToolCall, Usage


@dataclass(frozen=True, slots=True)
class Timings:
    queue_time_ms: float = 0.0  # admission wait plus executor queueing
    time_to_first_token_ms: float = 0.0  # from the RPC's arrival at the server
    total_time_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Output:
    """One of the `n` outputs of a `generate` call."""

    index: int
    text: str
    token_ids: tuple[int, ...]
    finish_reason: str | None
    usage: Usage
    logprobs: tuple[TokenLogprob, ...] = ()
    matched_stop: str | None = None  # the stop string that ended this output
    matched_stop_token_id: int | None = None  # the stop token (or EOS) that ended it
    tool_calls: tuple[ToolCall, ...] = ()  # calls parsed from the text (requests with tools)
    reasoning: str = ""  # the reasoning split from the text (servers with a reasoning parser)


@dataclass(frozen=True, slots=True)
class Completion:
    """A finished `generate` call. The top-level text/token fields are those of `outputs[0]`; `usage` is summed
    over all outputs (prompt tokens counted once)."""

    request_id: str
    text: str
    token_ids: tuple[int, ...]
    finish_reason: str | None
    usage: Usage
    outputs: tuple[Output, ...]
    logprobs: tuple[TokenLogprob, ...] = ()
    matched_stop: str | None = None
    matched_stop_token_id: int | None = None
    tool_calls: tuple[ToolCall, ...] = ()  # those of outputs[0]
    reasoning: str = ""  # that of outputs[0]
    prompt: PromptInfo | None = None  # when prompt_token_ids or echo was asked for
    timings: Timings | None = None


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One message of a stream: text and token-id deltas of output `index`. The last chunk of each output carries
    `finish_reason`, `usage` and `timings`; the first carries `prompt` when it was asked for."""

    request_id: str
    index: int
    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: str | None = None
    matched_stop: str | None = None
    matched_stop_token_id: int | None = None
    usage: Usage | None = None
    timings: Timings | None = None
    prompt: PromptInfo | None = None
    tool_calls: tuple[ToolCall, ...] = ()  # on the output's last chunk
    reasoning: str = ""  # reasoning text delta (servers with a reasoning parser); `text` is then the content


@dataclass(frozen=True, slots=True)
class ModelLimits:
    """Per-request limits the server enforces for a model."""

    max_n: int
    max_stop: int
    max_stop_length: int
    max_tokens: int
    default_max_tokens: int
    max_prompt_chars: int
    max_logit_bias: int


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    executor: str
    executor_version: str
    max_context_length: int
    vocab_size: int
    eos_token_ids: tuple[int, ...]
    capabilities: Capabilities
    limits: ModelLimits
    ready: bool
    default: bool  # the model used when a request names none
