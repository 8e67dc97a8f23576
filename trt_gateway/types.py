"""Backend-neutral request and output types.

These frozen dataclasses are the contract between the gRPC layer (which converts protobuf into them) and every
executor (which consumes `GenerateRequest` and yields `TokenDelta`). Nothing here imports grpc, protobuf or torch.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class FinishReason(str, enum.Enum):
    """Why one output stopped. The string values are what the client and integrations show users."""

    LENGTH = "length"  # max_tokens reached (or the context window is full)
    STOP_TOKEN = "stop_token"  # EOS or one of stop_token_ids
    STOP_STRING = "stop_string"  # one of the stop strings matched
    CANCELLED = "cancelled"  # aborted by Abort, a deadline or a disconnect
    ERROR = "error"  # the executor failed this request; the RPC status says why


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model made (or, in a history, made earlier)."""

    id: str
    name: str
    arguments: str  # a JSON object, as text


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call."""

    name: str
    description: str = ""
    parameters: str = ""  # the JSON schema of the arguments object, as text; "" = any object


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant turn's calls
    tool_call_id: str = ""  # a tool turn: the call it answers


@dataclass(frozen=True, slots=True)
class Prompt:
    """Exactly one of the three inputs is set (validated at the boundary)."""

    text: str | None = None
    token_ids: tuple[int, ...] | None = None
    messages: tuple[ChatMessage, ...] | None = None


# A temperature below this means greedy decoding (vLLM's _SAMPLING_EPS too): dividing float32 logits by 1e-45 makes
# them inf / nan, and anything this small is greedy in effect anyway.
GREEDY_TEMPERATURE = 1e-5


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """temperature < GREEDY_TEMPERATURE (0, say) means greedy; top_k == 0, top_p == 1 and min_p == 0 mean "off"."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    logit_bias: Mapping[int, float] = field(default_factory=dict)

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_TEMPERATURE


@dataclass(frozen=True, slots=True)
class StoppingCriteria:
    max_tokens: int = 256
    min_tokens: int = 0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    include_stop: bool = False  # keep the matched stop string / stop token in the output
    ignore_eos: bool = False


@dataclass(frozen=True, slots=True)
class ResponseOptions:
    logprobs: bool = False  # logprob of each sampled token
    top_logprobs: int = 0  # and this many most likely alternatives per position
    prompt_token_ids: bool = False  # return the prompt's token ids in the first delta
    echo: bool = False  # return the prompt text in the first delta
    queue_position: bool = False  # report the position in the admission queue while waiting (server-side only)


@dataclass(frozen=True, slots=True)
class GuidedDecoding:
    """At most one constraint is set."""

    json_schema: str | None = None
    regex: str | None = None
    grammar: str | None = None
    choice: tuple[str, ...] = ()

    @property
    def kind(self) -> str | None:
        for name in ("json_schema", "regex", "grammar"):
            if getattr(self, name) is not None:
                return name
        return "choice" if self.choice else None


@dataclass(frozen=True, slots=True)
class SpeculativeOptions:
    enabled: bool = True  # a request may opt out of the server's speculative decoding
    num_draft_tokens: int | None = None  # lower the server's draft length for this request


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """One output sequence's worth of work. `n > 1` is fanned out by the server into n of these."""

    request_id: str
    model: str
    prompt: Prompt
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stopping: StoppingCriteria = field(default_factory=StoppingCriteria)
    response: ResponseOptions = field(default_factory=ResponseOptions)
    guided: GuidedDecoding = field(default_factory=GuidedDecoding)
    speculative: SpeculativeOptions = field(default_factory=SpeculativeOptions)
    adapter: str | None = None
    priority: int = 0  # higher runs first
    tools: tuple[Tool, ...] = ()  # rendered through the chat template; calls come back in the last delta
    tool_choice: str = ""  # "" or "auto": the model decides; "none"; "required"; or a tool's name (forced)
    parallel_tool_calls: bool = True  # False: a "required" reply is constrained to exactly one call


@dataclass(frozen=True, slots=True)
class TopLogprob:
    token_id: int
    token: str
    logprob: float


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token_id: int
    token: str
    logprob: float
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens served from the prefix cache
    draft_tokens: int = 0  # speculative tokens proposed
    accepted_tokens: int = 0  # speculative tokens the target accepted


@dataclass(frozen=True, slots=True)
class PromptInfo:
    """Sent once, on the first delta, when the request asked for it."""

    num_tokens: int
    token_ids: tuple[int, ...] = ()
    text: str = ""


@dataclass(frozen=True, slots=True)
class Finish:
    reason: FinishReason
    usage: Usage
    matched_stop: str = ""  # the stop string that matched
    matched_stop_token_id: int | None = None  # the stop token (or EOS) that matched
    queue_time_s: float = 0.0  # time the executor held the request before first scheduling it


@dataclass(frozen=True, slots=True)
class TokenDelta:
    """What an executor yields: new text and token ids since the last delta.

    One delta may carry several tokens (speculative decoding accepts many at once), or none (text held back by a
    partial stop string, or the first delta carrying only `prompt`). The last delta, and only it, carries `finish`.
    """

    text: str = ""
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()
    prompt: PromptInfo | None = None
    finish: Finish | None = None
    tool_calls: tuple[ToolCall, ...] = ()  # on the last delta only: the calls parsed from this output's text
    reasoning: str = ""  # reasoning text delta, split from `text` by the server's reasoning parser (reasoning.py)


class Residency(str, enum.Enum):
    """Where an adapter's weights are now."""

    GPU = "gpu"  # in an executor slot, ready for a batch (the engine's device, which may be the CPU)
    CPU = "cpu"  # cached in host memory
    DISK = "disk"  # registered; loaded on first use


@dataclass(frozen=True, slots=True)
class AdapterInfo:
    name: str
    path: str
    model: str
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    residency: Residency = Residency.DISK
    slot: int = -1  # executor slot index when residency is GPU
    active_requests: int = 0


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an executor can do for one model. The server refuses anything else with UNIMPLEMENTED."""

    lora: bool = False
    max_lora_rank: int = 0
    max_loras: int = 0
    speculative: str = ""  # "" (none), "ngram", "draft", "eagle", ...
    num_draft_tokens: int = 0
    guided: tuple[str, ...] = ()  # subset of ("json_schema", "regex", "grammar", "choice")
    logprobs: bool = False
    max_top_logprobs: int = 0
    chat_template: bool = False
    tokenize: bool = True
    prompt_token_ids: bool = True
    seed: bool = True
    penalties: bool = True
    logit_bias: bool = True
    min_p: bool = True


@dataclass(frozen=True, slots=True)
class ServedModel:
    """What an executor says about a model it serves (the server adds its limits to make the `ModelInfo` that
    clients get: `trt_gateway.client.ModelInfo`)."""

    name: str
    executor: str
    executor_version: str
    max_context_length: int
    vocab_size: int
    eos_token_ids: tuple[int, ...]
    capabilities: Capabilities
    ready: bool = True


@dataclass(frozen=True, slots=True)
class ExecutorLoad:
    """What an executor reports about its load, for the metrics routers read (a snapshot at scrape time)."""

    num_running: int = 0  # requests the executor is computing
    num_waiting: int = 0  # requests the executor holds but has not scheduled yet
    kv_cache_usage: float = 0.0  # fraction of KV-cache blocks in use, 0..1
    block_size: int = 0  # tokens per KV block (0: unknown)
    num_blocks: int = 0
    max_loras: int = 0  # adapters that can run at once (0: LoRA off)
    running_adapters: tuple[str, ...] = ()
    waiting_adapters: tuple[str, ...] = ()
