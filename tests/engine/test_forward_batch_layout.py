"""`forward_batch.layout` against a plain reference: the same tensors (values, dtypes, shapes) for every input.

The layout's fast paths (decodes without per-token Python, one buffer shipped as a whole) must never change a
result. The oracle below is the straightforward implementation the engine used before them: every chunk goes through
one per-token loop, every array through `torch.tensor`. Seeded random steps mix decodes, prompt chunks with and
without cached context, verify chunks (a token plus drafts), chunks that sample nothing, empty chunks, LoRA slots,
block sizes and both prefill descriptions.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest
import torch

from trt_gateway.engine.forward_batch import Chunk, ForwardBatch, layout
from trt_gateway.engine.layers.attention import PrefillBatch, PrefillSpan
from trt_gateway.engine.layers.lora import LoraBatch

CPU = torch.device("cpu")


# -- the oracle ----------------------------------------------------------------------------------------------------
def _t(values: list[int], shape: tuple[int, ...] | None = None) -> torch.Tensor:
    t = torch.tensor(values, dtype=torch.int64)
    return t.view(shape) if shape is not None else t


def _ref_tables(tables: list[Sequence[int]], context_lens: list[int], bs: int) -> torch.Tensor:
    needed = [-(-n // bs) for n in context_lens]
    width = max(needed, default=1)
    flat: list[int] = []
    for table, m in zip(tables, needed, strict=True):
        flat.extend(table[:m])
        flat.extend([0] * (width - m))
    return _t(flat, (len(tables), width))


def reference_layout(chunks: Sequence[Chunk], bs: int, batched_prefill: bool) -> dict[str, Any]:
    order = sorted(range(len(chunks)), key=lambda i: len(chunks[i].token_ids) > 1)  # stable: decodes first
    ids: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    first_row = [0] * len(chunks)
    lora_slots: list[int] = []
    lora_ranks: dict[int, int] = {}
    decodes: list[Chunk] = []
    prefills: list[tuple[int, Chunk]] = []
    for i in order:
        c = chunks[i]
        n = len(c.token_ids)
        first_row[i] = len(ids)
        ids.extend(c.token_ids)
        for p in range(c.start, c.start + n):
            positions.append(p)
            slots.append(c.block_table[p // bs] * bs + p % bs)
        (decodes.append(c) if n == 1 else prefills.append((first_row[i], c)))  # type: ignore[func-returns-value]
        lora_slots.extend([c.lora_slot] * n)
        if c.lora_slot:
            lora_ranks[c.lora_slot] = c.lora_rank
    rows = [first_row[i] + len(c.token_ids) - j for i, c in enumerate(chunks) for j in range(c.num_logits, 0, -1)]
    out: dict[str, Any] = {
        "input_ids": _t(ids),
        "positions": _t(positions),
        "slot_mapping": _t(slots),
        "logit_rows": _t(rows),
        "num_decodes": len(decodes),
        "decode_block_tables": _ref_tables([d.block_table for d in decodes], [d.start + 1 for d in decodes], bs),
        "decode_context_lens": _t([d.start + 1 for d in decodes]),
        "prefills": (),
        "prefill_batch": None,
    }
    ends = [c.start + len(c.token_ids) for _, c in prefills]
    if batched_prefill and prefills:
        nd = len(decodes)
        out["prefill_batch"] = (
            _t([row - nd for row, _ in prefills] + [len(ids) - nd]).to(torch.int32),
            _ref_tables([c.block_table for _, c in prefills], ends, bs),
            _t(ends),
            max(len(c.token_ids) for _, c in prefills),
        )
    else:
        out["prefills"] = tuple(
            (row, len(c.token_ids), end, _t(list(c.block_table[: -(-end // bs)])) if c.start else None)
            for (row, c), end in zip(prefills, ends, strict=True)
        )
    used = sorted(set(lora_slots) - {0})
    out["lora"] = None
    if used:
        groups = tuple((s, _t([i for i, x in enumerate(lora_slots) if x == s])) for s in used)
        out["lora"] = (_t(lora_slots), groups, max(lora_ranks[s] for s in used))
    return out


# -- comparison ----------------------------------------------------------------------------------------------------
def same(a: torch.Tensor | None, b: torch.Tensor | None, what: str) -> None:
    if a is None or b is None:
        assert a is None and b is None, what
        return
    assert a.dtype == b.dtype and a.shape == b.shape and a.device == b.device, (what, a, b)
    assert torch.equal(a, b), (what, a, b)


def assert_matches(batch: ForwardBatch, ref: dict[str, Any]) -> None:
    meta = batch.meta
    for name in ("input_ids", "positions", "logit_rows"):
        same(getattr(batch, name), ref[name], name)
    same(meta.slot_mapping, ref["slot_mapping"], "slot_mapping")
    assert meta.num_decodes == ref["num_decodes"]
    same(meta.decode_block_tables, ref["decode_block_tables"], "decode_block_tables")
    same(meta.decode_context_lens, ref["decode_context_lens"], "decode_context_lens")
    assert len(meta.prefills) == len(ref["prefills"])
    for span, (row, n, end, table) in zip(meta.prefills, ref["prefills"], strict=True):
        assert isinstance(span, PrefillSpan)
        assert (span.query_start, span.num_query, span.context_len) == (row, n, end)
        same(span.block_table, table, "span.block_table")
    if ref["prefill_batch"] is None:
        assert meta.prefill_batch is None
    else:
        pb = meta.prefill_batch
        assert isinstance(pb, PrefillBatch)
        query_start, tables, lens, max_len = ref["prefill_batch"]
        same(pb.query_start, query_start, "query_start")
        same(pb.block_tables, tables, "prefill block_tables")
        same(pb.context_lens, lens, "prefill context_lens")
        assert pb.max_query_len == max_len
    if ref["lora"] is None:
        assert batch.lora is None
    else:
        assert isinstance(batch.lora, LoraBatch)
        token_slots, groups, rank = ref["lora"]
        same(batch.lora.token_slots, token_slots, "lora.token_slots")
        assert [s for s, _ in batch.lora.groups] == [s for s, _ in groups]
        for (_, rows), (_, ref_rows) in zip(batch.lora.groups, groups, strict=True):
            same(rows, ref_rows, "lora group rows")
        assert batch.lora.rank == rank


# -- random steps --------------------------------------------------------------------------------------------------
def random_chunk(rng: random.Random, bs: int, kind: str, lora: bool) -> Chunk:
    if kind == "decode":
        start, n = rng.randrange(0, 300), 1
        num_logits = rng.choice((1, 1, 1, 0))  # 0: a one-token prompt chunk that does not reach the end
    elif kind == "verify":  # the pending token and its drafts, every row sampled
        start, n = rng.randrange(1, 300), 1 + rng.randint(1, 5)
        num_logits = n
    elif kind == "empty":
        start, n, num_logits = rng.randrange(0, 40), 0, 0
    else:  # a prompt chunk, from the start or after cached context
        start, n = rng.choice((0, rng.randrange(1, 200))), rng.randint(2, 70)
        num_logits = rng.choice((0, 1))
    blocks = -(-(start + n) // bs) + rng.choice((0, 0, 0, 1, 3))  # tables may run past what the chunk needs
    table = [rng.randrange(0, 5000) for _ in range(blocks)]
    ids = [rng.randrange(0, 1000) for _ in range(n)]
    slot = rng.choice((0, 0, 1, 2, 3)) if lora else 0
    rank = (slot * 8 if rng.random() < 0.9 else rng.choice((4, 16))) if slot else 0
    return Chunk(
        tuple(ids) if rng.random() < 0.2 else ids,
        start,
        tuple(table) if rng.random() < 0.2 else table,
        num_logits=num_logits,
        lora_slot=slot,
        lora_rank=rank,
    )


def random_step(rng: random.Random) -> tuple[list[Chunk], int]:
    bs = rng.choice((1, 4, 16, 16))
    mix = rng.choice(("decodes", "decodes", "mixed", "prefills", "spec"))
    size = rng.choice((0, 1, 2, 5, 9, 17)) if rng.random() < 0.9 else rng.randint(100, 400)
    weights = {
        "decodes": {"decode": 1.0},
        "mixed": {"decode": 0.5, "prompt": 0.35, "verify": 0.1, "empty": 0.05},
        "prefills": {"prompt": 1.0},
        "spec": {"decode": 0.4, "verify": 0.6},
    }[mix]
    lora = rng.random() < 0.3
    kinds = rng.choices(list(weights), weights=list(weights.values()), k=size)
    return [random_chunk(rng, bs, k, lora) for k in kinds], bs


@pytest.mark.parametrize("batched_prefill", [False, True])
def test_layout_matches_the_reference_on_random_steps(batched_prefill: bool) -> None:
    rng = random.Random(20260301 + batched_prefill)
    for case in range(200):
        chunks, bs = random_step(rng)
        try:
            assert_matches(layout(chunks, bs, CPU, batched_prefill), reference_layout(chunks, bs, batched_prefill))
        except AssertionError as exc:
            raise AssertionError(f"case {case}: block_size={bs}, chunks={chunks}") from exc


def test_decode_only_steps_of_every_batch_size_match() -> None:
    """The engine's common case, where the fast path applies, at the sizes the benchmark times."""
    rng = random.Random(7)
    for size in (1, 2, 64, 256, 1024):
        starts = [rng.randrange(130, 260) for _ in range(size)]
        chunks = [
            Chunk([rng.randrange(1000)], s, [rng.randrange(20000) for _ in range(s // 16 + 1)], num_logits=1)
            for s in starts
        ]
        assert_matches(layout(chunks, 16, CPU), reference_layout(chunks, 16, batched_prefill=False))


@pytest.mark.parametrize("batched_prefill", [False, True])
def test_chunks_of_no_tokens_keep_their_place_among_the_decodes(batched_prefill: bool) -> None:
    """Rare in the engine, but the layout must still agree: an empty chunk adds no row, takes the row after the
    decodes before it, and (with inconsistent ranks) its adapter rank counts where it stands."""
    decode = Chunk([5], 3, [1], num_logits=1, lora_slot=1, lora_rank=8)
    empty = Chunk([], 3, [2], lora_slot=1, lora_rank=4)
    prompt = Chunk([6, 7, 8], 2, [3, 9], num_logits=1, lora_slot=2, lora_rank=2)
    for chunks in ([decode, empty, prompt], [empty, decode, prompt], [prompt, decode, empty, decode]):
        assert_matches(layout(chunks, 4, CPU, batched_prefill), reference_layout(chunks, 4, batched_prefill))
