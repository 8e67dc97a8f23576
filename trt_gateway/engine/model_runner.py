"""Turns a scheduled step into one forward pass over the flattened batch, then samples.

1. lay the step's tokens out on one axis: decodes first (one token each, the vectorised attention path), then
   prefill chunks; record each token's position, KV slot and LoRA slot (the adapter slot of its sequence, 0 = none);
2. run the model, keep the hidden state of the last token of every sequence that samples, project those to logits;
3. sample on the device and bring ids (and logprobs) to the host in one transfer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trt_gateway.engine.config import EngineConfig
from trt_gateway.engine.kv_cache import allocate_kv_cache
from trt_gateway.engine.layers.attention import AttentionMetadata, PrefillSpan
from trt_gateway.engine.lora.batched import LoraBatch
from trt_gateway.engine.model_config import ModelConfig
from trt_gateway.engine.models.llama import LlamaForCausalLM
from trt_gateway.engine.sampler import Sampler, SamplerOutput
from trt_gateway.engine.sampling_batch import SamplingBatch
from trt_gateway.engine.scheduler import ScheduledSeq, SchedulerOutput
from trt_gateway.engine.sequence import SampledToken, Sequence


@dataclass(frozen=True, slots=True)
class ModelInput:
    input_ids: torch.Tensor  # [T] int64
    positions: torch.Tensor  # [T] int64
    meta: AttentionMetadata
    sample_rows: torch.Tensor  # [S] int64: index in T of the last token of each sampling sequence
    sampling: tuple[ScheduledSeq, ...]  # the S sampling sequences, in sample_rows order
    lora: LoraBatch | None = None  # per-token adapter slots; None when no token in the step has an adapter


class ModelRunner:
    def __init__(
        self,
        config: EngineConfig,
        model_cfg: ModelConfig,
        model: LlamaForCausalLM,
        num_blocks: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.model_cfg = model_cfg
        self.model = model
        self.block_size = config.block_size
        self.device = device
        self.dtype = dtype
        self.kv_cache = allocate_kv_cache(model_cfg, num_blocks, config.block_size, dtype, device)
        for i, attn in enumerate(model.attention_layers()):
            attn.bind_cache(self.kv_cache[0, i], self.kv_cache[1, i])
        self.sampler = Sampler()

    @torch.inference_mode()
    def run(self, step: SchedulerOutput) -> dict[int, SampledToken]:
        """Compute the step's tokens; return the sampled token of each sequence that samples, by seq_id."""
        inputs = self.prepare(step.scheduled)
        hidden = self.model(inputs.input_ids, inputs.positions, inputs.meta, inputs.lora)  # [T, hidden]
        if not inputs.sampling:
            return {}
        logits = self.model.compute_logits(hidden[inputs.sample_rows])  # [S, V] float32
        seqs = [item.seq for item in inputs.sampling]
        batch = SamplingBatch.from_sequences(seqs, self.model_cfg.vocab_size, self.device)
        return _to_host(seqs, self.sampler(logits, batch))

    def prepare(self, scheduled: tuple[ScheduledSeq, ...]) -> ModelInput:
        bs = self.block_size
        decodes = [s for s in scheduled if s.num_new_tokens == 1]
        prefills = [s for s in scheduled if s.num_new_tokens > 1]
        input_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        sample_rows: list[int] = []
        sampling: list[ScheduledSeq] = []
        spans: list[PrefillSpan] = []
        lora_slots: list[int] = []
        lora_ranks: dict[int, int] = {}
        for item in decodes + prefills:
            seq, start, n = item.seq, item.start, item.num_new_tokens
            first = len(input_ids)
            table = seq.block_table
            input_ids.extend(seq.token_ids[start : start + n])
            positions.extend(range(start, start + n))
            slots.extend(table[p // bs] * bs + p % bs for p in range(start, start + n))
            lora_slots.extend([seq.lora_slot] * n)
            if seq.lora_slot and seq.lora is not None:
                lora_ranks[seq.lora_slot] = seq.lora.rank
            if n > 1:
                blocks = (
                    torch.tensor(table[: -(-(start + n) // bs)], dtype=torch.int64, device=self.device)
                    if start
                    else None
                )
                spans.append(PrefillSpan(first, n, start + n, blocks))
            if item.samples:
                sample_rows.append(first + n - 1)
                sampling.append(item)

        # A decode's table holds exactly the blocks its context needs; pad to the longest with block 0, whose slots
        # the context-length mask hides.
        max_blocks = max((len(d.seq.block_table) for d in decodes), default=1)
        tables = [d.seq.block_table + [0] * (max_blocks - len(d.seq.block_table)) for d in decodes]
        meta = AttentionMetadata(
            slot_mapping=self._tensor(slots),
            num_decodes=len(decodes),
            decode_block_tables=self._tensor(tables) if tables else self._tensor([[0]])[:0],
            decode_context_lens=self._tensor([d.start + 1 for d in decodes]),
            prefills=tuple(spans),
        )
        return ModelInput(
            self._tensor(input_ids),
            self._tensor(positions),
            meta,
            self._tensor(sample_rows),
            tuple(sampling),
            LoraBatch.build(lora_slots, lora_ranks, self.device),
        )

    def _tensor(self, values: list) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.int64).to(self.device, non_blocking=True)


def _to_host(seqs: list[Sequence], out: SamplerOutput) -> dict[int, SampledToken]:
    """One device-to-host copy per tensor; rows are trimmed to each request's own top_logprobs."""
    token_ids = out.token_ids.tolist()
    if out.logprobs is None:
        return {seq.seq_id: SampledToken(tok) for seq, tok in zip(seqs, token_ids, strict=True)}
    assert out.top_ids is not None and out.top_logprobs is not None  # set together with logprobs
    chosen, top_ids, top_lp = out.logprobs.tolist(), out.top_ids.tolist(), out.top_logprobs.tolist()
    result: dict[int, SampledToken] = {}
    for row, seq in enumerate(seqs):
        response = seq.request.response
        if not (response.logprobs or response.top_logprobs):
            result[seq.seq_id] = SampledToken(token_ids[row])
            continue
        n = response.top_logprobs
        top = tuple(zip(top_ids[row][:n], top_lp[row][:n], strict=True))
        result[seq.seq_id] = SampledToken(token_ids[row], chosen[row], top)
    return result
