"""One request's sequence as the engine tracks it: tokens, KV blocks, progress and stop rules.

The scheduler contract is "tokens per sequence per step": `num_computed_tokens` counts tokens whose KV is in the
cache; every step computes some of the rest (a prefill chunk, a whole prompt, or the one token sampled last step),
and a token is sampled only when the step catches up with `num_tokens`. Preemption just frees the blocks and sets
`num_computed_tokens` back to 0: prompt and generated tokens are then recomputed as one longer prompt.

Speculative decoding extends a decode step: `spec_token_ids` are draft tokens computed together with the pending
token, and the step may append several tokens at once. Rejected drafts leave KV behind in slots past
`num_computed_tokens`; those slots are overwritten when the sequence gets there, so rollback is just not counting them.
The draft model's own KV (same block table, its own cache) is valid up to `num_draft_computed_tokens`.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trt_gateway import errors
from trt_gateway.types import FinishReason, GenerateRequest, Usage

if TYPE_CHECKING:
    from trt_gateway.engine.lora.registry import LoraRef


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(frozen=True, slots=True)
class SampledToken:
    """One sampled token and, when asked for, its raw log-softmax logprob and the top alternatives."""

    token_id: int
    logprob: float | None = None
    top: tuple[tuple[int, float], ...] = ()  # (token id, logprob), most likely first


class Sequence:
    def __init__(
        self,
        request: GenerateRequest,
        prompt_token_ids: list[int],
        *,
        arrival_index: int,
        eos_token_ids: tuple[int, ...],
        seed: int,
    ) -> None:
        self.request = request
        self.request_id = request.request_id
        self.seq_id = arrival_index  # unique per engine; also breaks priority ties first-come first-served
        self.token_ids: list[int] = list(prompt_token_ids)  # prompt, then generated tokens
        self.num_prompt_tokens = len(prompt_token_ids)
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0  # prompt tokens served by the prefix cache at first scheduling (for Usage)
        self.block_table: list[int] = []
        self.block_hashes: list[int] = []  # chained hashes of the full blocks so far; survive preemption
        self.num_registered_blocks = 0  # leading blocks already published in the prefix cache
        self.status = SequenceStatus.WAITING
        self.finish_reason: FinishReason | None = None
        self.matched_stop_token_id: int | None = None
        self.seed = seed
        self.cache_salt = request.adapter  # different adapters must never share KV (the engine refines it per load)
        self.lora: LoraRef | None = None  # the request's hold on its adapter, released when the sequence retires
        self.lora_slot = 0  # the engine slot of its adapter while RUNNING; 0 = none
        self.arrival_time = time.monotonic()
        self.first_scheduled_time: float | None = None
        self.num_preemptions = 0
        self.logprobs: list[SampledToken] = []
        # speculative decoding: this step's drafts, the draft model's KV progress, totals for Usage
        self.spec_token_ids: list[int] = []
        self.num_draft_computed_tokens = 0
        self.num_draft_tokens = 0
        self.num_accepted_tokens = 0
        self.grammar: Any = None  # xgrammar GrammarMatcher of a guided request (engine/structured_output.py)
        self.error: errors.GatewayError | None = None  # why this sequence failed on its own (ends it with ERROR)
        stopping = request.stopping
        eos = () if stopping.ignore_eos else eos_token_ids
        self.stop_token_ids = frozenset(eos) | frozenset(stopping.stop_token_ids)

    # -- sizes -----------------------------------------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def prompt_token_ids(self) -> list[int]:
        return self.token_ids[: self.num_prompt_tokens]

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def priority(self) -> int:
        return self.request.priority

    @property
    def sort_key(self) -> tuple[int, int]:
        """Queue order: higher priority first, then arrival order."""
        return (-self.request.priority, self.seq_id)

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def queue_time_s(self) -> float:
        start = self.first_scheduled_time if self.first_scheduled_time is not None else time.monotonic()
        return start - self.arrival_time

    @property
    def usage(self) -> Usage:
        return Usage(
            prompt_tokens=self.num_prompt_tokens,
            completion_tokens=self.num_output_tokens,
            cached_tokens=self.num_cached_tokens,
            draft_tokens=self.num_draft_tokens,
            accepted_tokens=self.num_accepted_tokens,
        )

    # -- progress --------------------------------------------------------------------------------------------------
    @property
    def is_decoding(self) -> bool:
        """All known tokens but the last sampled one have KV: the next step is a decode (and may speculate)."""
        return self.num_tokens - self.num_computed_tokens == 1

    def append(self, sample: SampledToken) -> None:
        self.token_ids.append(sample.token_id)
        if self.grammar is not None and not self.grammar.is_terminated():
            # Sampling only picks allowed tokens, so a refusal means the grammar left no token to pick: fail this
            # request alone (check_stop ends it), never the engine.
            if not self.grammar.accept_token(sample.token_id):
                kind = self.request.guided.kind
                self.error = errors.InvalidArgument(  # the constraint's fault (compile checks only its start)
                    f"guided.{kind}: the constraint allows no token after {self.num_output_tokens} output tokens "
                    "(a rule that never ends?)",
                    field=f"guided.{kind}",
                )
        if self.request.response.logprobs or self.request.response.top_logprobs:
            self.logprobs.append(sample)

    def check_stop(self, max_model_len: int) -> FinishReason | None:
        """After appending a token: the reason to stop now, or None. Stop tokens win over length limits."""
        if self.error is not None:
            return FinishReason.ERROR
        last = self.token_ids[-1]
        stopping = self.request.stopping
        num_tokens = len(self.token_ids)  # the sizes computed once: this runs for every sequence every step
        num_output = num_tokens - self.num_prompt_tokens
        # min_tokens is also enforced in the sampler (stop ids are masked); this keeps it true for forced tokens too.
        if last in self.stop_token_ids and num_output >= stopping.min_tokens:
            self.matched_stop_token_id = last
            return FinishReason.STOP_TOKEN
        if self.grammar is not None and self.grammar.is_terminated():  # the grammar is complete and took EOS
            self.matched_stop_token_id = last
            return FinishReason.STOP_TOKEN
        if num_output >= stopping.max_tokens or num_tokens >= max_model_len:
            return FinishReason.LENGTH
        return None

    def __repr__(self) -> str:
        return (
            f"Sequence({self.request_id!r}, status={self.status.value}, tokens={self.num_tokens}, "
            f"computed={self.num_computed_tokens}, blocks={len(self.block_table)})"
        )
