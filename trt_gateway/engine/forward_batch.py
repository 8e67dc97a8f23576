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

from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from trt_gateway.engine.layers.attention import AttentionMetadata, PrefillBatch, PrefillSpan
from trt_gateway.engine.layers.lora import LoraBatch


# Not frozen: a frozen dataclass's __init__ costs about 2.5x (one object.__setattr__ per field), and the model runner
# builds one Chunk per sequence per step (1,024 at large batch). Nothing keeps a Chunk past its `layout` call.
@dataclass(slots=True)
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
        pin = device.type == "cuda"
        if len(self.values) < 256:  # small steps: torch.tensor's per-element cost is less than the extra copy below
            host = torch.tensor(self.values, dtype=torch.int64, pin_memory=pin)
        else:
            # Through array('q'): torch.tensor(list) converts element by element (about 50 ns each, over 1 ms for
            # the 20k integers of a 1,024-sequence step); array converts in C at a fraction of that.
            host = torch.empty(len(self.values), dtype=torch.int64, pin_memory=pin)
            host.copy_(torch.frombuffer(array("q", self.values), dtype=torch.int64))
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
    bs = block_size
    # Rows: decodes first, in the order given, then the longer chunks in order. A chunk of no tokens keeps its place
    # among the decodes (it adds no row) but is described like a prefill chunk.
    first_row = [0] * len(chunks)
    decodes: list[Chunk] = []
    rest: list[int] = []  # indices of the chunks that are not decodes, in row order
    longer: list[int] = []
    for i, chunk in enumerate(chunks):
        n = len(chunk.token_ids)
        if n == 1:
            first_row[i] = len(decodes)
            decodes.append(chunk)
        elif n:
            longer.append(i)
        else:
            first_row[i] = len(decodes)
            rest.append(i)
    rest += longer
    # A decode is one token at position `start`: no per-token loop, one comprehension per array.
    input_ids = [d.token_ids[0] for d in decodes]
    positions = [d.start for d in decodes]
    slots = [d.block_table[p // bs] * bs + p % bs for d, p in zip(decodes, positions, strict=True)]
    context_lens = [p + 1 for p in positions]
    prefills: list[tuple[int, Chunk]] = []  # (first row, chunk)
    for i in rest:
        chunk = chunks[i]
        start, n, table = chunk.start, len(chunk.token_ids), chunk.block_table
        if n:
            first_row[i] = len(input_ids)
        input_ids.extend(chunk.token_ids)
        positions.extend(range(start, start + n))
        slots.extend(table[p // bs] * bs + p % bs for p in range(start, start + n))
        prefills.append((first_row[i], chunk))
    logit_rows: list[int] = []
    for i, chunk in enumerate(chunks):
        end, k = first_row[i] + len(chunk.token_ids), chunk.num_logits
        if k == 1:
            logit_rows.append(end - 1)
        elif k > 0:
            logit_rows.extend(range(end - k, end))
    packer = _Packer()
    packer.add(input_ids)
    packer.add(positions)
    packer.add(slots)
    packer.add(logit_rows)
    # A decode's table holds the blocks its context needs; pad to the longest with block 0, which the context
    # length hides.
    packer.add(*_tables([d.block_table for d in decodes], context_lens, bs))
    packer.add(context_lens)
    if batched_prefill and prefills:
        num_decodes = len(decodes)
        query_start = [row - num_decodes for row, _ in prefills] + [len(input_ids) - num_decodes]
        ends = [c.start + len(c.token_ids) for _, c in prefills]
        packer.add(query_start)
        packer.add(*_tables([c.block_table for _, c in prefills], ends, bs))
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
                _blocks(c, bs, device) if c.start else None,
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
    return ForwardBatch(ids, pos, meta, rows, _lora(chunks, decodes, rest, device))


def _lora(chunks: Sequence[Chunk], decodes: list[Chunk], rest: list[int], device: torch.device) -> LoraBatch | None:
    """Per-token adapter slots in row order; a step without adapters (the common case) skips the per-token list."""
    if not any(c.lora_slot for c in chunks):
        return None
    slots = [d.lora_slot for d in decodes]
    for i in rest:
        slots.extend([chunks[i].lora_slot] * len(chunks[i].token_ids))
    # slot -> rank, the last chunk in row order winning (chunks of no tokens count where they stand among the decodes)
    ranks = {c.lora_slot: c.lora_rank for c in chunks if len(c.token_ids) <= 1 and c.lora_slot}
    ranks.update((c.lora_slot, c.lora_rank) for c in chunks if len(c.token_ids) > 1 and c.lora_slot)
    return LoraBatch.build(slots, ranks, device)


def _tables(tables: list[Sequence[int]], context_lens: list[int], block_size: int) -> tuple[list[int], tuple[int, int]]:
    """Flattened [N, width] block tables, each cut to the blocks its context needs and padded with block 0."""
    needed = [-(-n // block_size) for n in context_lens]
    width = max(needed, default=1)
    pads = [[0] * k for k in range(width + 1)]  # one padding list per length, shared by the rows
    flat: list[int] = []
    extend = flat.extend
    for table, m in zip(tables, needed, strict=True):
        extend(table[:m] if len(table) > m else table)
        extend(pads[width - m])
    return flat, (len(tables), width)


def _blocks(chunk: Chunk, block_size: int, device: torch.device) -> torch.Tensor:
    end = chunk.start + len(chunk.token_ids)
    return torch.tensor(list(chunk.block_table[: -(-end // block_size)]), dtype=torch.int64).to(device)
