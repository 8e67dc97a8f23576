"""Lays out one forward pass: the chunks of token ids of several sequences on one flattened axis.

A chunk is some consecutive tokens of one sequence, starting at `start` (everything before it already has KV in the
cache). Chunks of one token (decodes) go first: attention runs them as one padded batch. Longer chunks (prompt
chunks, and speculative verification: the pending token plus its drafts) follow, each a `PrefillSpan` attending to
its cached context causally. For each token the layout records its position, its KV slot and its LoRA slot.

The target model runner and the draft model both lay out their passes here; they own different KV caches but the
same block tables, so the slots are the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from trt_gateway.engine.layers.attention import AttentionMetadata, PrefillSpan
from trt_gateway.engine.lora.batched import LoraBatch


@dataclass(frozen=True, slots=True)
class Chunk:
    token_ids: Sequence[int]  # the tokens computed this pass
    start: int  # position of the first one; earlier positions have KV
    block_table: Sequence[int]  # covers at least start + len(token_ids) positions
    num_logits: int = 0  # how many trailing tokens need logits: 0, 1 (samples the next token), 1 + drafts (verify)
    lora_slot: int = 0  # adapter slot of the sequence (0 = none)
    lora_rank: int = 0


@dataclass(frozen=True, slots=True)
class ForwardBatch:
    input_ids: torch.Tensor  # [T] int64
    positions: torch.Tensor  # [T] int64
    meta: AttentionMetadata
    logit_rows: torch.Tensor  # [R] int64: rows of T whose logits are needed, chunk by chunk in the order given
    lora: LoraBatch | None = None  # per-token adapter slots; None when no token has an adapter


def layout(chunks: Sequence[Chunk], block_size: int, device: torch.device) -> ForwardBatch:
    order = sorted(range(len(chunks)), key=lambda i: len(chunks[i].token_ids) > 1)  # stable: decodes first
    input_ids: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    first_row = [0] * len(chunks)
    spans: list[PrefillSpan] = []
    lora_slots: list[int] = []
    lora_ranks: dict[int, int] = {}
    decodes: list[Chunk] = []
    for i in order:
        chunk = chunks[i]
        start, n, table = chunk.start, len(chunk.token_ids), chunk.block_table
        first_row[i] = len(input_ids)
        input_ids.extend(chunk.token_ids)
        positions.extend(range(start, start + n))
        slots.extend(table[p // block_size] * block_size + p % block_size for p in range(start, start + n))
        lora_slots.extend([chunk.lora_slot] * n)
        if chunk.lora_slot:
            lora_ranks[chunk.lora_slot] = chunk.lora_rank
        if n == 1:
            decodes.append(chunk)
        else:
            blocks = _tensor(list(table[: -(-(start + n) // block_size)]), device) if start else None
            spans.append(PrefillSpan(first_row[i], n, start + n, blocks))
    logit_rows = [
        first_row[i] + len(chunk.token_ids) - j
        for i, chunk in enumerate(chunks)
        for j in range(chunk.num_logits, 0, -1)
    ]
    # A decode's table holds the blocks its context needs; pad to the longest with block 0, whose slots the
    # context-length mask hides.
    needed = [-(-(d.start + 1) // block_size) for d in decodes]
    width = max(needed, default=1)
    tables = [list(d.block_table[:m]) + [0] * (width - m) for d, m in zip(decodes, needed, strict=True)]
    meta = AttentionMetadata(
        slot_mapping=_tensor(slots, device),
        num_decodes=len(decodes),
        decode_block_tables=_tensor(tables, device) if tables else _tensor([[0]], device)[:0],
        decode_context_lens=_tensor([d.start + 1 for d in decodes], device),
        prefills=tuple(spans),
    )
    return ForwardBatch(
        _tensor(input_ids, device),
        _tensor(positions, device),
        meta,
        _tensor(logit_rows, device),
        LoraBatch.build(lora_slots, lora_ranks, device),
    )


def _tensor(values: list, device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64).to(device, non_blocking=True)
