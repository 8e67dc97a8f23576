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
- all graphs share one memory pool, captured largest first: no two replays overlap, so one graph's temporaries
  are dead before the next replay;
- the logits are the one output that outlives a replay (the sampler reads them), so every graph copies its
  [b, V] float32 logits into `buffer[:b]` of ONE static [max_batch, V] buffer allocated outside the pool. Kept as
  each graph's own live output instead, they could not be reused and would sum over all buckets: 9.3 GB with a
  128k vocabulary and buckets up to 1,024, none of it in the KV-cache budget's estimate; the one buffer is 0.5 GB,
  and `kv_cache.activation_bytes` counts it.

Only decode-only steps without LoRA qualify (`ForwardBatch.is_decode_only`); the rest (prompt chunks, verification
of drafts, adapters) runs eagerly, where prompt-sized matmuls dwarf launch overhead anyway.
"""

from __future__ import annotations

import logging
import time

import torch

from trt_gateway.engine.forward_batch import ForwardBatch
from trt_gateway.engine.kernels import pdl
from trt_gateway.engine.layers.attention import AttentionMetadata
from trt_gateway.engine.layers.linear import one_row_gemv
from trt_gateway.engine.models.llama import LlamaForCausalLM

logger = logging.getLogger(__name__)


def batch_buckets(max_batch: int) -> list[int]:
    sizes = [1, 2, 4] + list(range(8, 64, 8)) + list(range(64, 256, 16)) + list(range(256, max_batch + 32, 32))
    buckets = sorted({min(s, max_batch) for s in sizes if s <= max_batch} | {max_batch})
    return buckets


class DecodeGraphs:
    def __init__(
        self,
        model: LlamaForCausalLM,
        *,
        max_batch: int,
        max_blocks: int,
        pad_block: int,
        block_size: int,
        device: torch.device,
    ) -> None:
        self.model = model
        self.buckets = batch_buckets(max_batch)
        self.max_batch = self.buckets[-1]
        self.pad_block = pad_block
        self.pad_slot = pad_block * block_size
        b = self.max_batch
        self.input_ids = torch.zeros(b, dtype=torch.int64, device=device)
        self.positions = torch.zeros(b, dtype=torch.int64, device=device)
        self.slot_mapping = torch.full((b,), self.pad_slot, dtype=torch.int64, device=device)
        self.context_lens = torch.ones(b, dtype=torch.int64, device=device)
        self.block_tables = torch.full((b, max_blocks), pad_block, dtype=torch.int64, device=device)
        # Allocated here, before capture: outside the graphs' pool, so no graph's temporaries ever alias it.
        # kv_cache.activation_bytes counts it (max_batch x vocab x 4 bytes).
        self.logits = torch.empty(b, model.config.vocab_size, dtype=torch.float32, device=device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.capture_s = 0.0

    def describe(self) -> str:
        return f"{len(self.graphs)} graphs up to batch {self.max_batch} (captured in {self.capture_s:.1f} s)"

    @torch.inference_mode()
    def capture(self) -> None:
        began = time.perf_counter()
        pool = None
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        # Warm-up and capture alike, so Triton compiles (the one-row GEMVs, the PDL variants) outside the capture.
        with torch.cuda.stream(stream), one_row_gemv(), pdl.for_graphs():
            for b in reversed(self.buckets):
                self._forward(b)  # warm-up outside the graph: Triton compiles, cuBLAS picks its kernels
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool, stream=stream):
                    # The graph's own logits are a temporary, back in the pool once copied (the next, smaller
                    # graph reuses that memory); the copy is what a replay leaves behind.
                    self.logits[:b].copy_(self._forward(b))
                pool = graph.pool()
                self.graphs[b] = graph
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        self.capture_s = time.perf_counter() - began
        logger.info("CUDA graphs: %s", self.describe())

    def _forward(self, b: int) -> torch.Tensor:
        meta = AttentionMetadata(
            slot_mapping=self.slot_mapping[:b],
            num_decodes=b,
            decode_block_tables=self.block_tables[:b],
            decode_context_lens=self.context_lens[:b],
            prefills=(),
        )
        hidden = self.model(self.input_ids[:b], self.positions[:b], meta)
        return self.model.compute_logits(hidden)

    def fits(self, batch: ForwardBatch) -> bool:
        return batch.is_decode_only and 0 < batch.meta.num_decodes <= self.max_batch

    def run(self, batch: ForwardBatch) -> torch.Tensor:
        """Replay the bucket of `batch` (decode-only, see fits) -> logits [n, V] float32 of its n rows: a view of
        the static logits buffer, valid until the next replay (of any bucket: all write the same buffer)."""
        n = batch.meta.num_decodes
        b = next(size for size in self.buckets if size >= n)
        meta = batch.meta
        self.input_ids[:n].copy_(batch.input_ids)
        self.positions[:n].copy_(batch.positions)
        self.slot_mapping[:n].copy_(meta.slot_mapping)
        self.context_lens[:n].copy_(meta.decode_context_lens)
        width = meta.decode_block_tables.shape[1]
        self.block_tables[:n, :width].copy_(meta.decode_block_tables)
        if n < b:  # rows of an earlier, larger step would otherwise write its sequences' slots again
            self.slot_mapping[n:b].fill_(self.pad_slot)
            self.context_lens[n:b].fill_(1)
            self.block_tables[n:b, 0].fill_(self.pad_block)
        self.graphs[b].replay()
        return self.logits[:n]
