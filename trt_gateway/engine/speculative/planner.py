"""Decides, before each step, which running sequences speculate and how far, and keeps the acceptance counts.

Load-aware: drafting pays while the step is memory-bound (small batches), because verifying k drafts costs about
as much as one decode. With more than `max_batch` sequences running, the step is compute-bound and every rejected
draft is wasted work, so nobody drafts. Per sequence the draft length is the server's, lowered by the request
(`speculative.num_draft_tokens`) and by what it may still produce (max_tokens, the context window): drafting past
the end is pure waste. A request with `speculative.enabled = false` never drafts.

N-gram drafts are proposed here, on the host; the draft model runs inside the step (it needs the step's KV
blocks), so here a sequence only gets placeholders saying how many drafts it wants.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from trt_gateway.engine.sequence import Sequence
from trt_gateway.engine.speculative.ngram import NgramProposer


@dataclass
class SpeculationStats:
    """Totals since start. Read from other threads (metrics), written by the engine thread."""

    draft_tokens: int = 0
    accepted_tokens: int = 0
    verifications: int = 0  # (sequence, step) pairs that verified at least one draft
    accepted_length: list[int] = field(default_factory=list)  # [n]: verifications that produced n + 1 tokens
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, num_drafts: int, num_accepted: int) -> None:
        with self.lock:
            self.draft_tokens += num_drafts
            self.accepted_tokens += num_accepted
            self.verifications += 1
            if len(self.accepted_length) <= num_accepted:
                self.accepted_length.extend([0] * (num_accepted + 1 - len(self.accepted_length)))
            self.accepted_length[num_accepted] += 1

    def snapshot(self) -> SpeculationStats:
        with self.lock:
            return SpeculationStats(
                self.draft_tokens, self.accepted_tokens, self.verifications, list(self.accepted_length)
            )

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens else 0.0

    @property
    def mean_accepted_length(self) -> float:
        """Tokens per verification: accepted drafts plus the correction or bonus token."""
        return 1 + self.accepted_tokens / self.verifications if self.verifications else 0.0


class SpeculationPlanner:
    def __init__(
        self, mode: str, num_draft_tokens: int, max_batch: int, *, ngram_min: int = 2, ngram_max: int = 4
    ) -> None:
        if mode not in ("ngram", "draft"):
            raise ValueError(f"unknown speculative mode {mode!r}")
        self.mode = mode
        self.num_draft_tokens = num_draft_tokens
        self.max_batch = max_batch
        self.ngram = NgramProposer(ngram_min, ngram_max) if mode == "ngram" else None
        self.stats = SpeculationStats()

    def plan(self, running: Iterable[Sequence], num_running: int, max_model_len: int) -> None:
        """Set spec_token_ids of every running sequence: drafts (n-gram), placeholders (draft model) or none."""
        enabled = num_running <= self.max_batch
        for seq in running:
            seq.spec_token_ids = []
            if not enabled or not seq.is_decoding:
                continue
            k = self.draft_length(seq, max_model_len)
            if k <= 0:
                continue
            if self.ngram is not None:
                seq.spec_token_ids = self.ngram.propose(seq.token_ids, k)
            else:
                seq.spec_token_ids = [0] * k  # the draft model fills them in during the step

    def draft_length(self, seq: Sequence, max_model_len: int) -> int:
        options = seq.request.speculative
        if not options.enabled:
            return 0
        k = min(self.num_draft_tokens, options.num_draft_tokens or self.num_draft_tokens)
        left = seq.request.stopping.max_tokens - seq.num_output_tokens  # tokens it may still produce
        # A step yields up to k + 1 tokens; its last draft sits at position num_tokens - 1 + k.
        return min(k, left - 1, max_model_len - seq.num_tokens)
