"""Continuous batching: each step, decide how many tokens every sequence computes.

The contract (vLLM v1's): a step is a list of (sequence, num_new_tokens). A decode is 1 token, a prompt is up to
its length, a chunk of a long prompt is whatever is left of the step's token budget; one rule covers them all.
A step:

1. Running sequences, highest priority first, take their remaining tokens out of `max_num_batched_tokens`. When
   the KV cache has no block for one, the lowest-priority running sequence not yet scheduled this step is
   preempted (blocks freed, back to the waiting queue, recomputed later from prompt + generated tokens); if none
   is left, the sequence preempts itself.
2. If nothing was preempted, waiting sequences (priority order, then arrival) are admitted while there is budget,
   a free slot under `max_num_seqs` and KV room; their prefix-cache hits count as already computed. The queue head
   blocks the rest, so a long prompt is never starved by a stream of short ones. A sequence with a LoRA adapter
   also needs an engine slot for it (its own adapter's, a free one, or one no running sequence uses): the adapters
   of the running batch never exceed max_loras, and a running sequence's slot is pinned until it stops running.

Speculative decoding: a decoding sequence may carry `spec_token_ids` (n-gram drafts, or for the draft model as many
placeholders as drafts it wants). It is scheduled for 1 + k tokens; drafts are optional, so they are the first thing
cut when the token budget or the KV cache runs short, before anything is preempted.

`postprocess` then advances each sequence by the tokens computed, publishes full blocks in the prefix cache and
appends the sampled tokens one by one, stopping at the first that ends the sequence (EOS, max_tokens, the context
window): accepted drafts past a stop are dropped. Finished sequences release their blocks immediately.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass

from trt_gateway.engine.block_manager import BlockManager
from trt_gateway.engine.lora.registry import LoraRegistry
from trt_gateway.engine.sequence import SampledToken, Sequence, SequenceStatus
from trt_gateway.types import FinishReason


# Read-only by convention, not frozen: a frozen dataclass's __init__ costs about 2.5x, and every step builds one per
# sequence (1,024 at large batch).
@dataclass(slots=True)
class ScheduledSeq:
    seq: Sequence
    start: int  # num_computed_tokens when scheduled: the position of its first new token
    num_new_tokens: int  # including num_spec draft tokens
    samples: bool  # the step reaches the end of the known tokens, so its last logits pick the next token
    num_spec: int = 0  # draft tokens verified this step (the last num_spec of the new tokens)

    @classmethod
    def of(cls, seq: Sequence, num_new_tokens: int, num_spec: int = 0) -> ScheduledSeq:
        """Snapshot seq's progress now: the sequence itself moves on in postprocess."""
        start = seq.num_computed_tokens
        samples = start + num_new_tokens - num_spec == seq.num_tokens
        return cls(seq, start, num_new_tokens, samples, num_spec)


@dataclass(frozen=True, slots=True)
class SchedulerOutput:
    scheduled: tuple[ScheduledSeq, ...]
    preempted: tuple[Sequence, ...] = ()

    @property
    def num_batched_tokens(self) -> int:
        return sum(s.num_new_tokens for s in self.scheduled)

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


class Scheduler:
    def __init__(
        self,
        block_manager: BlockManager,
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_model_len: int,
        lora: LoraRegistry | None = None,
    ) -> None:
        self.block_manager = block_manager
        self.lora = lora
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.waiting: list[Sequence] = []  # sorted by Sequence.sort_key
        self.running: list[Sequence] = []  # sorted by Sequence.sort_key

    def add(self, seq: Sequence) -> None:
        bisect.insort(self.waiting, seq, key=_key)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    @property
    def num_unfinished(self) -> int:
        return len(self.waiting) + len(self.running)

    # -- step -------------------------------------------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        budget = self.max_num_batched_tokens
        scheduled: list[ScheduledSeq] = []
        preempted: list[Sequence] = []
        bm = self.block_manager

        # 1. running sequences, in priority order; the unscheduled tail is where victims come from
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            num_new = min(seq.num_tokens - seq.num_computed_tokens, budget)
            num_spec = min(len(seq.spec_token_ids), budget - num_new) if seq.is_decoding else 0
            if num_spec and not bm.can_append(seq, num_new + num_spec):
                num_spec = 0  # drafts are optional: never preempt anyone for them
            del seq.spec_token_ids[num_spec:]
            num_new += num_spec
            while not bm.can_append(seq, num_new):
                victim = self.running.pop()  # lowest priority, latest arrival; may be seq itself
                self._preempt(victim)
                preempted.append(victim)
                if victim is seq:
                    break
            if seq.status is not SequenceStatus.RUNNING:
                break
            scheduled.append(ScheduledSeq.of(seq, num_new, num_spec))
            bm.may_append(seq, num_new)
            budget -= num_new
            i += 1

        # 2. admit waiting sequences, unless this step already had to preempt (the cache is full)
        while not preempted and self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            hits = bm.match_prefix(seq)
            num_new = min(seq.num_tokens - len(hits) * bm.block_size, budget)
            if not bm.can_allocate(seq, hits, num_new) or not self._can_take_slot(seq):
                break
            self.waiting.pop(0)
            bm.allocate(seq, hits, num_new)
            if seq.lora is not None and self.lora is not None:
                seq.lora_slot = self.lora.take_slot(seq.lora)
            if seq.first_scheduled_time is None:
                seq.first_scheduled_time = time.monotonic()
                seq.num_cached_tokens = seq.num_computed_tokens
            seq.status = SequenceStatus.RUNNING
            bisect.insort(self.running, seq, key=_key)
            scheduled.append(ScheduledSeq.of(seq, num_new))
            budget -= num_new
        return SchedulerOutput(tuple(scheduled), tuple(preempted))

    def schedule_next(self, prev: SchedulerOutput) -> SchedulerOutput | None:
        """The step after `prev`, scheduled before prev's tokens are known (async scheduling): each sequence of prev
        decodes the one token prev samples for it. None when the next step needs a full `schedule()`: something is
        waiting to be admitted, prev had prompt chunks that sample nothing or drafts, a running sequence sat prev
        out, the budget or the KV cache is short (this never preempts).

        Sequences whose prev token ends them by length are left out; those a stop token will end are computed once
        more and dropped by `postprocess`, which skips sequences that are no longer running."""
        if self.waiting:
            return None
        items: list[ScheduledSeq] = []
        needed = 0
        running = 0
        # Hoisted and inlined (blocks_needed, num_output_tokens): this loop runs once per sequence every async step.
        bs, max_model_len, is_running = self.block_manager.block_size, self.max_model_len, SequenceStatus.RUNNING
        for item in prev.scheduled:
            seq = item.seq
            if seq.status is not is_running:
                continue  # finished or aborted since prev was scheduled
            running += 1
            if not item.samples or item.num_spec:
                return None
            position = item.start + item.num_new_tokens  # where prev's token goes
            num_output = len(seq.token_ids) - seq.num_prompt_tokens
            if num_output + 1 >= seq.request.stopping.max_tokens or position + 1 >= max_model_len:
                continue  # prev's token is its last
            grow = item.num_new_tokens + 1  # prev's tokens and the next one, from seq.num_computed_tokens
            needed += max(0, -(-(seq.num_computed_tokens + grow) // bs) - len(seq.block_table))
            items.append(ScheduledSeq(seq, position, 1, samples=True))
        if running != len(self.running) or not items or len(items) > self.max_num_batched_tokens:
            return None
        if needed > self.block_manager.num_free_blocks:
            return None
        for item in items:
            # may_append is a no-op while the table already covers the position (15 steps in 16 at block_size 16)
            if -(-(item.start + 1) // bs) > len(item.seq.block_table):
                self.block_manager.may_append(item.seq, item.start + 1 - item.seq.num_computed_tokens)
        return SchedulerOutput(tuple(items))

    def postprocess(
        self, output: SchedulerOutput, sampled: dict[int, tuple[SampledToken, ...]]
    ) -> list[tuple[Sequence, int]]:
        """Advance every scheduled sequence and append its sampled tokens (by seq_id: one, or the accepted drafts
        plus one). Returns (sequence, tokens appended) for those that got any."""
        advanced: list[tuple[Sequence, int]] = []
        is_running = SequenceStatus.RUNNING
        for item in output.scheduled:
            seq = item.seq
            if seq.status is not is_running:
                continue  # finished meanwhile (aborted by another thread between run and postprocess)
            samples = sampled.get(seq.seq_id)
            if not samples:
                seq.num_computed_tokens = item.start + item.num_new_tokens
                self.block_manager.cache_full_blocks(seq)
                continue  # a prefill chunk that did not reach the end of the prompt
            appended, reason = 0, None
            for sample in samples:
                seq.append(sample)
                appended += 1
                reason = seq.check_stop(self.max_model_len)
                if reason is not None:
                    break
            # KV is valid for the pending token and the accepted drafts: every sample's position but the last
            # (capped at the tokens kept when a stop cut the accepted run short).
            computed = item.start + item.num_new_tokens - item.num_spec + len(samples) - 1
            seq.num_computed_tokens = min(computed, seq.num_tokens)
            if seq.spec_token_ids:  # most steps have none: no new empty list per sequence
                seq.spec_token_ids = []
            if item.num_spec:
                seq.num_draft_tokens += item.num_spec
                seq.num_accepted_tokens += len(samples) - 1
                seq.num_draft_computed_tokens = min(seq.num_draft_computed_tokens, seq.num_computed_tokens)
            self.block_manager.cache_full_blocks(seq)
            advanced.append((seq, appended))
            if reason is not None:
                self.finish(seq, reason)
        return advanced

    # -- lifecycle --------------------------------------------------------------------------------------------------
    def finish(self, seq: Sequence, reason: FinishReason) -> None:
        """Stop seq wherever it is and free its blocks at once. Idempotent."""
        if seq.is_finished:
            return
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
            self._release_slot(seq)
        else:
            self.waiting.remove(seq)
        self.block_manager.deallocate(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason

    def _preempt(self, seq: Sequence) -> None:
        self.block_manager.deallocate(seq)
        self._release_slot(seq)
        seq.num_computed_tokens = 0
        seq.num_draft_computed_tokens = 0
        seq.spec_token_ids = []
        seq.num_preemptions += 1
        seq.status = SequenceStatus.WAITING
        # Keeping its original arrival index puts it ahead of everything that arrived later at its priority.
        bisect.insort(self.waiting, seq, key=_key)

    def _can_take_slot(self, seq: Sequence) -> bool:
        return seq.lora is None or self.lora is None or self.lora.can_take_slot(seq.lora)

    def _release_slot(self, seq: Sequence) -> None:
        if seq.lora_slot and seq.lora is not None and self.lora is not None:
            self.lora.release_slot(seq.lora)
        seq.lora_slot = 0


def _key(seq: Sequence) -> tuple[int, int]:
    return seq.sort_key
