"""CUDA graphs of the decode step: the whole forward pass and the logits, replayed instead of launched.

At batch 1 an 8B model's step is ~400 kernel launches; launched one by one from Python they take far longer than the
~5 ms the GPU needs (measured on the H100: 47 ms eager vs 9 ms graphed for a plain step). A graph replays them all
with one launch. A graph's shapes and addresses are fixed, so:

- one graph per bucket of batch sizes (1, 2, 4, 8, then steps of 8 to 64, of 16 to 256, of 32 beyond); a step of
  n decodes replays the smallest bucket >= n, its padding rows made harmless (below);
- every input lives in a static buffer that a step copies into: token ids, positions, KV slots, context lengths,
  and the block tables at their widest (max_model_len / block_size columns). The decode kernel reads only the
  blocks a sequence's context needs, so the width costs nothing per step;
- padding rows compute a one-token context in a reserved block (`pad_block`, one block past those the block
  manager hands out), so they never write into a live sequence's KV;
- all graphs share one memory pool, captured largest first, as the outputs of one replay are dead before the next.

With speculative decoding, steps that verify drafts are graphed too: when every sequence of the step computes the
same q = 1 + k tokens (the pending token and k drafts; always so at batch 1), the graph of (batch bucket, q) runs
them through the varlen prefill kernel, whose grid is bounded by q. An eager step costs three graphed ones (8B model,
batch 1, H100: 18 ms against 5.9), which made drafting a loss unless nearly every draft was accepted.

Steps with LoRA adapters, prompt chunks (unless they happen to have the shape of a verify step), decodes mixed with
chunks, or sequences verifying different numbers of drafts run eagerly.
"""

from __future__ import annotations

import logging
import time

import torch

from trt_gateway.engine.forward_batch import ForwardBatch
from trt_gateway.engine.layers.attention import AttentionMetadata, PrefillBatch
from trt_gateway.engine.models.llama import LlamaForCausalLM

logger = logging.getLogger(__name__)


def batch_buckets(max_batch: int) -> list[int]:
    sizes = [1, 2, 4] + list(range(8, 64, 8)) + list(range(64, 256, 16)) + list(range(256, max_batch + 32, 32))
    buckets = sorted({min(s, max_batch) for s in sizes if s <= max_batch} | {max_batch})
    return buckets


class DecodeGraphs:
    """Graphs of decode steps: n sequences, each computing q tokens. q = 1 is plain decoding; q = 1 + k verifies k
    drafts (speculative decoding) and is captured only when `max_chunk` > 1, for batches up to `max_chunk_batch`."""

    def __init__(
        self,
        model: LlamaForCausalLM,
        *,
        max_batch: int,
        max_blocks: int,
        pad_block: int,
        block_size: int,
        device: torch.device,
        max_chunk: int = 1,
        max_chunk_batch: int = 0,
    ) -> None:
        self.model = model
        self.buckets = batch_buckets(max_batch)
        self.max_batch = self.buckets[-1]
        # Chunks of q > 1 tokens: the padding rows' tokens go to slots 0 .. q - 1 of the pad block, hence q <= block.
        chunk_batch = min(max_chunk_batch, max_batch)
        self.max_chunk = min(max_chunk, block_size) if chunk_batch >= 1 else 1
        self.chunk_buckets = batch_buckets(chunk_batch) if self.max_chunk > 1 else []
        self.pad_block = pad_block
        self.pad_slot = pad_block * block_size
        self.block_size = block_size
        b = self.max_batch
        tokens = max(b, self.max_chunk * (self.chunk_buckets[-1] if self.chunk_buckets else 0))
        self.input_ids = torch.zeros(tokens, dtype=torch.int64, device=device)
        self.positions = torch.zeros(tokens, dtype=torch.int64, device=device)
        self.slot_mapping = torch.full((tokens,), self.pad_slot, dtype=torch.int64, device=device)
        self.context_lens = torch.ones(b, dtype=torch.int64, device=device)
        self.block_tables = torch.full((b, max_blocks), pad_block, dtype=torch.int64, device=device)
        # (batch bucket, q) -> [bucket + 1] int32 chunk starts 0, q, 2q, ...: fixed per graph
        self.query_starts: dict[tuple[int, int], torch.Tensor] = {
            (cb, q): torch.arange(0, cb * q + 1, q, dtype=torch.int32, device=device)
            for q in range(2, self.max_chunk + 1)
            for cb in self.chunk_buckets
        }
        # q -> positions 0 .. q - 1 repeated for every padding sequence a chunk step may have, and their pad slots
        largest = self.chunk_buckets[-1] if self.chunk_buckets else 0
        self.pad_chunk_positions = {
            q: torch.arange(q, dtype=torch.int64, device=device).repeat(largest) for q in range(2, self.max_chunk + 1)
        }
        self.pad_chunk_slots = {q: self.pad_slot + pos for q, pos in self.pad_chunk_positions.items()}
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self.logits: dict[tuple[int, int], torch.Tensor] = {}  # its static [bucket * q, V] float32 output
        self.capture_s = 0.0

    def describe(self) -> str:
        chunks = ""
        if self.chunk_buckets:
            chunks = f", and for 2-{self.max_chunk} tokens per sequence up to batch {self.chunk_buckets[-1]}"
        return f"{len(self.graphs)} graphs up to batch {self.max_batch}{chunks} (captured in {self.capture_s:.1f} s)"

    @torch.inference_mode()
    def capture(self) -> None:
        began = time.perf_counter()
        pool = None
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        shapes = [(b, 1) for b in reversed(self.buckets)]
        shapes += [(b, q) for q in range(self.max_chunk, 1, -1) for b in reversed(self.chunk_buckets)]
        with torch.cuda.stream(stream):
            for shape in shapes:
                self._forward(*shape)  # warm-up outside the graph: Triton compiles, cuBLAS picks its kernels
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool, stream=stream):
                    self.logits[shape] = self._forward(*shape)
                pool = graph.pool()
                self.graphs[shape] = graph
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        self.capture_s = time.perf_counter() - began
        logger.info("CUDA graphs: %s", self.describe())

    def _forward(self, b: int, q: int) -> torch.Tensor:
        if q == 1:
            meta = AttentionMetadata(
                slot_mapping=self.slot_mapping[:b],
                num_decodes=b,
                decode_block_tables=self.block_tables[:b],
                decode_context_lens=self.context_lens[:b],
                prefills=(),
            )
        else:  # every sequence a chunk of q tokens: the varlen prefill kernel, its grid bounded by q
            meta = AttentionMetadata(
                slot_mapping=self.slot_mapping[: b * q],
                num_decodes=0,
                decode_block_tables=self.block_tables[:0],
                decode_context_lens=self.context_lens[:0],
                prefills=(),
                prefill_batch=PrefillBatch(self.query_starts[b, q], self.block_tables[:b], self.context_lens[:b], q),
            )
        hidden = self.model(self.input_ids[: b * q], self.positions[: b * q], meta)
        return self.model.compute_logits(hidden)

    def shape_of(self, batch: ForwardBatch) -> tuple[int, int] | None:
        """(sequences, tokens per sequence) of a step a graph can replay, else None. From host-side sizes only."""
        if batch.lora is not None:
            return None
        tokens, meta = batch.input_ids.shape[0], batch.meta
        if meta.num_decodes == tokens:
            return (tokens, 1) if 0 < tokens <= self.max_batch else None
        p = meta.prefill_batch
        if meta.num_decodes or p is None or not self.chunk_buckets:
            return None
        n, q = p.context_lens.shape[0], p.max_query_len
        # max_query_len is the longest chunk, so n * q == tokens only when every chunk has q tokens
        if n * q != tokens or not 1 < q <= self.max_chunk or n > self.chunk_buckets[-1]:
            return None
        return n, q

    def fits(self, batch: ForwardBatch) -> bool:
        return self.shape_of(batch) is not None

    def run(self, batch: ForwardBatch) -> torch.Tensor:
        """Replay the graph of `batch`'s shape (see shape_of) -> logits [T, V] float32 of its T tokens in order: a
        view of the graph's output, valid until the next replay."""
        shape = self.shape_of(batch)
        assert shape is not None, "run() needs a step that fits()"
        n, q = shape
        b = next(size for size in (self.buckets if q == 1 else self.chunk_buckets) if size >= n)
        meta, t = batch.meta, n * q
        self.input_ids[:t].copy_(batch.input_ids)
        self.positions[:t].copy_(batch.positions)
        self.slot_mapping[:t].copy_(meta.slot_mapping)
        if q == 1:
            lens, tables = meta.decode_context_lens, meta.decode_block_tables
        else:
            assert meta.prefill_batch is not None
            lens, tables = meta.prefill_batch.context_lens, meta.prefill_batch.block_tables
        self.context_lens[:n].copy_(lens)
        self.block_tables[:n, : tables.shape[1]].copy_(tables)
        if n < b:  # rows of an earlier, larger step would otherwise write its sequences' slots again
            if q == 1:
                self.slot_mapping[t:b].fill_(self.pad_slot)
            else:  # each padding sequence: q tokens at positions 0 .. q - 1 of the pad block, seeing themselves
                self.slot_mapping[t : b * q].copy_(self.pad_chunk_slots[q][: (b - n) * q])
                self.positions[t : b * q].copy_(self.pad_chunk_positions[q][: (b - n) * q])
            self.context_lens[n:b].fill_(q)
            self.block_tables[n:b, 0].fill_(self.pad_block)
        self.graphs[b, q].replay()
        return self.logits[b, q][:t]
