"""Lays out one forward pass: the chunks of token ids of several sequences on one flattened axis.

A chunk is some consecutive tokens of one sequence, starting at `start` (everything before it already has KV in the
cache). Chunks of one token (decodes) go first: attention runs them as one padded batch. Longer chunks (prompt
chunks, and speculative verification: the pending token plus its drafts) follow, each attending to its cached
context causally: as one `PrefillSpan` each on the torch path, or all together as one `PrefillBatch` on the kernel
path (`batched_prefill`). For each token the layout records its position, its KV slot and its LoRA slot.

Every integer the step needs goes to the device in ONE host-to-device copy (from pinned memory on CUDA) and is
sliced there: a copy per tensor would cost a launch and a host round trip each, which at batch 1 is a good part of
a CUDA-graph step.

The target model runner and the draft model both lay out their passes here; they own different KV caches but the
same block tables, so the slots are the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from trt_gateway.engine.layers.attention import AttentionMetadata, PrefillBatch, PrefillSpan
from trt_gateway.engine.layers.lora import LoraBatch


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

    @property
    def is_decode_only(self) -> bool:
        """Every chunk is one token and none has an adapter: the shape CUDA graphs replay."""
        return self.meta.num_decodes == self.input_ids.shape[0] and self.lora is None


class _Packer:
    """Collects int64 arrays on the host, ships them in one copy, hands out device views."""

    def __init__(self) -> None:
        self.values: list[int] = []
        self.parts: list[tuple[int, tuple[int, ...]]] = []

    def add(self, values: list[int], shape: tuple[int, ...] | None = None) -> int:
        self.parts.append((len(self.values), shape if shape is not None else (len(values),)))
        self.values.extend(values)
        return len(self.parts) - 1

    def ship(self, device: torch.device) -> list[torch.Tensor]:
        host = torch.tensor(self.values, dtype=torch.int64, pin_memory=device.type == "cuda")
        flat = host.to(device, non_blocking=True)
        out = []
        for offset, shape in self.parts:
            size = 1
            for dim in shape:
                size *= dim
            out.append(flat[offset : offset + size].view(shape))
        return out


def layout(
    chunks: Sequence[Chunk], block_size: int, device: torch.device, batched_prefill: bool = False
) -> ForwardBatch:
    """batched_prefill: describe the prefill chunks as one `PrefillBatch` (kernel path) instead of spans."""
    order = sorted(range(len(chunks)), key=lambda i: len(chunks[i].token_ids) > 1)  # stable: decodes first
    input_ids: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    first_row = [0] * len(chunks)
    lora_slots: list[int] = []
    lora_ranks: dict[int, int] = {}
    decodes: list[Chunk] = []
    prefills: list[tuple[int, Chunk]] = []  # (first row, chunk)
    for i in order:
        chunk = chunks[i]
        start, n, table = chunk.start, len(chunk.token_ids), chunk.block_table
        first_row[i] = len(input_ids)
        input_ids.extend(chunk.token_ids)
        if n == 1:
            positions.append(start)
            slots.append(table[start // block_size] * block_size + start % block_size)
            decodes.append(chunk)
        else:
            positions.extend(range(start, start + n))
            slots.extend(table[p // block_size] * block_size + p % block_size for p in range(start, start + n))
            prefills.append((first_row[i], chunk))
        lora_slots.extend([chunk.lora_slot] * n)
        if chunk.lora_slot:
            lora_ranks[chunk.lora_slot] = chunk.lora_rank
    logit_rows = [
        first_row[i] + len(chunk.token_ids) - j
        for i, chunk in enumerate(chunks)
        for j in range(chunk.num_logits, 0, -1)
    ]
    packer = _Packer()
    packer.add(input_ids)
    packer.add(positions)
    packer.add(slots)
    packer.add(logit_rows)
    # A decode's table holds the blocks its context needs; pad to the longest with block 0, which the context
    # length hides.
    packer.add(*_tables([d.block_table for d in decodes], [d.start + 1 for d in decodes], block_size))
    packer.add([d.start + 1 for d in decodes])
    if batched_prefill and prefills:
        num_decodes = len(decodes)
        query_start = [row - num_decodes for row, _ in prefills] + [len(input_ids) - num_decodes]
        ends = [c.start + len(c.token_ids) for _, c in prefills]
        packer.add(query_start)
        packer.add(*_tables([c.block_table for _, c in prefills], ends, block_size))
        packer.add(ends)
    views = packer.ship(device)
    ids, pos, slot_mapping, rows, decode_tables, decode_lens = views[:6]
    prefill_batch = None
    spans: tuple[PrefillSpan, ...] = ()
    if batched_prefill and prefills:
        query_start_t, prefill_tables, prefill_lens = views[6:9]
        prefill_batch = PrefillBatch(
            query_start_t.to(torch.int32),
            prefill_tables,
            prefill_lens,
            max(len(c.token_ids) for _, c in prefills),
        )
    else:  # the torch path: a table only for chunks with cached context (few; each goes on its own)
        spans = tuple(
            PrefillSpan(
                row,
                len(c.token_ids),
                c.start + len(c.token_ids),
                _blocks(c, block_size, device) if c.start else None,
            )
            for row, c in prefills
        )
    meta = AttentionMetadata(
        slot_mapping=slot_mapping,
        num_decodes=len(decodes),
        decode_block_tables=decode_tables,
        decode_context_lens=decode_lens,
        prefills=spans,
        prefill_batch=prefill_batch,
    )
    return ForwardBatch(ids, pos, meta, rows, LoraBatch.build(lora_slots, lora_ranks, device))


def _tables(tables: list[Sequence[int]], context_lens: list[int], block_size: int) -> tuple[list[int], tuple[int, int]]:
    """Flattened [N, width] block tables, each cut to the blocks its context needs and padded with block 0."""
    needed = [-(-n // block_size) for n in context_lens]
    width = max(needed, default=1)
    flat: list[int] = []
    for table, m in zip(tables, needed, strict=True):
        flat.extend(table[:m])
        flat.extend([0] * (width - m))
    return flat, (len(tables), width)


def _blocks(chunk: Chunk, block_size: int, device: torch.device) -> torch.Tensor:
    end = chunk.start + len(chunk.token_ids)
    return torch.tensor(list(chunk.block_table[: -(-end // block_size)]), dtype=torch.int64).to(device)
