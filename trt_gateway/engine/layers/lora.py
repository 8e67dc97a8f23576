"""Batched multi-LoRA maths in plain torch: one step's tokens, each with its own adapter (or none), one computation.

Beside `Linear`, which calls `lora_delta`; the slot storage (`lora/slots.py`) and the adapter files (`lora/`) sit
above the layers and import them, never the other way round.

Every LoRA-capable `Linear` holds stacked slot weights (`lora/slots.LoraSlots` allocates them):
    lora_a [S + 1, R, in]    lora_b [S + 1, out, R]      (R = max_lora_rank, S = max_loras)
Slot 0 is all zeros and means "no adapter"; adapters live in slots 1..S, zero-padded to R and with their scaling
already folded into B. A step gives every token a slot index (`LoraBatch.token_slots`), and the layer adds
    y[t] += B[slot[t]] @ (A[slot[t]] @ x[t])
Weights are never merged into W: the base matmul is shared by the whole batch and each row only gathers its own A/B.

Evaluations of that one formula (chosen per step, same result; a step where every row has the same adapter is just
two plain matmuls):
- `bgmv` (Punica's "batched gather matrix-vector"): gather A/B per row and do two batched mat-vecs. Best for decode
  steps: few rows, any mix of adapters, shapes fixed by (rows, rank), no host sync.
- `sgmv` (segmented): one pair of matmuls per distinct adapter over its rows. Best for prefill, where gathering
  [T, R, in] per row would cost T times the adapter's size in memory.
Both slice the rank to the largest rank in the batch, so a rank-8 adapter does not pay for max_lora_rank 64.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

# Use bgmv while the per-row gather stays under this many elements (rows x rank x (in + out)); else sgmv.
BGMV_MAX_ELEMENTS = 1 << 22


@dataclass(frozen=True, slots=True)
class LoraBatch:
    """The adapter of every token of one step. Built once per step by the model runner, read by every layer."""

    token_slots: torch.Tensor  # [T] int64, 0 = no adapter
    groups: tuple[tuple[int, torch.Tensor], ...]  # (slot, row indices [n] int64) per distinct adapter in the step
    rank: int  # the largest rank among the step's adapters

    @classmethod
    def build(cls, slots: Sequence[int], ranks: Mapping[int, int], device: torch.device) -> LoraBatch | None:
        """slots: one slot index per token (0 = none); ranks: slot -> rank. None when no token has an adapter."""
        used = sorted(set(slots) - {0})
        if not used:
            return None
        rows: dict[int, list[int]] = {s: [] for s in used}
        for i, s in enumerate(slots):
            if s:
                rows[s].append(i)
        groups = tuple((s, _tensor(r, device)) for s, r in rows.items())
        return cls(_tensor(list(slots), device), groups, max(ranks[s] for s in used))


def lora_delta(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, batch: LoraBatch) -> torch.Tensor:
    """x: [T, in]; a: [S+1, R, in]; b: [S+1, out, R] -> the LoRA term [T, out] (zero on rows without an adapter)."""
    rows, rank = x.shape[0], batch.rank
    if len(batch.groups) == 1 and batch.groups[0][1].shape[0] == rows:  # one adapter for every row: plain matmuls
        slot = batch.groups[0][0]
        return (x @ a[slot, :rank].T) @ b[slot, :, :rank].T
    if rows * rank * (a.shape[2] + b.shape[1]) <= BGMV_MAX_ELEMENTS:
        return bgmv(x, a[:, :rank], b[:, :, :rank], batch.token_slots)
    return sgmv(x, a[:, :rank], b[:, :, :rank], batch.groups)


def bgmv(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, token_slots: torch.Tensor) -> torch.Tensor:
    """Gather per row. x [T, in], a [S+1, r, in], b [S+1, out, r], token_slots [T] -> [T, out]."""
    shrunk = torch.bmm(a[token_slots], x.unsqueeze(2))  # [T, r, 1]
    return torch.bmm(b[token_slots], shrunk).squeeze(2)  # [T, out, r] @ [T, r, 1] -> [T, out]


def sgmv(
    x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, groups: Sequence[tuple[int, torch.Tensor]]
) -> torch.Tensor:
    """One segment per adapter. x [T, in], a [S+1, r, in], b [S+1, out, r] -> [T, out]."""
    out = x.new_zeros(x.shape[0], b.shape[1])
    for slot, rows in groups:
        xs = x.index_select(0, rows)  # [n, in]
        out.index_add_(0, rows, (xs @ a[slot].T) @ b[slot].T)  # [n, r] -> [n, out]
    return out


def _tensor(values: list[int], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64).to(device, non_blocking=True)
