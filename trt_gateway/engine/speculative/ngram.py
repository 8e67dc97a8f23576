"""Prompt lookup: draft the tokens that followed the latest earlier occurrence of the sequence's last n tokens.

No model runs: the draft is free, and pays off wherever the output repeats its input (quoting, code edits,
extraction, repetitive formats). The longest suffix (ngram_max .. ngram_min tokens) that occurs earlier wins;
among its occurrences the most recent one, which tracks what the output is copying right now.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class NgramProposer:
    def __init__(self, ngram_min: int, ngram_max: int) -> None:
        self.ngram_min = ngram_min
        self.ngram_max = ngram_max

    def propose(self, token_ids: Sequence[int], num_tokens: int) -> list[int]:
        """Up to num_tokens draft tokens to follow token_ids (none when no suffix recurs)."""
        total = len(token_ids)
        if num_tokens < 1 or total < self.ngram_min + 1:
            return []
        tokens = np.asarray(token_ids, dtype=np.int64)
        for n in range(min(self.ngram_max, total - 1), self.ngram_min - 1, -1):
            # Windows starting at 0 .. total - n - 1: every occurrence but the suffix itself.
            windows = np.lib.stride_tricks.sliding_window_view(tokens[:-1], n)
            hits = np.flatnonzero((windows == tokens[-n:]).all(axis=1))
            if hits.size:
                follow = int(hits[-1]) + n
                return tokens[follow : follow + num_tokens].tolist()
        return []
