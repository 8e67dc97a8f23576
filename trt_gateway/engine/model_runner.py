"""Turns a scheduled step into one forward pass over the flattened batch, then samples or verifies drafts.

A step is `launch` then `collect`. `launch` queues a step's device work and returns at once on CUDA; `collect` waits for
it. Between the two the engine may launch the next decode step (async scheduling, `LLMEngine`), fed with this step's
sampled ids on the device, so the host's scheduling and bookkeeping overlap the GPU's forward pass.

1. (draft-model speculation) the draft model proposes the step's draft tokens;
2. lay the step's tokens out on one axis (`forward_batch.layout`): decodes first, then prefill chunks and verify
   chunks (the pending token plus its drafts);
3. run the model; project to logits only the rows that pick a token: the last of every sequence that samples, and
   every row of a verify chunk. On CUDA a decode-only step replays a captured graph instead (`cuda_graphs`), which
   computes the logits of every row;
4. sample on the device, or, when the step verifies drafts, run every sampling row through `rejection.verify` (a
   sequence without drafts is the case k = 0 there); bring ids and logprobs to the host in one transfer each.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence as SequenceOf
from dataclasses import dataclass, field

import torch

from trt_gateway.engine.cuda_graphs import DecodeGraphs
from trt_gateway.engine.engine_config import EngineConfig
from trt_gateway.engine.forward_batch import Chunk, ForwardBatch, layout
from trt_gateway.engine.kv_cache import allocate_kv_cache
from trt_gateway.engine.model_config import ModelConfig
from trt_gateway.engine.models.llama import LlamaForCausalLM
from trt_gateway.engine.sampling.batch import DraftRow, SamplingBatch, noise_key
from trt_gateway.engine.sampling.sampler import Sampler, SamplerOutput, compute_logprobs
from trt_gateway.engine.scheduler import ScheduledSeq, SchedulerOutput
from trt_gateway.engine.sequence import SampledToken, Sequence
from trt_gateway.engine.speculative.draft_model import DraftModel
from trt_gateway.engine.speculative.rejection import accept_key, verify
from trt_gateway.engine.structured_output import fill_bitmask

Sampled = dict[int, tuple[SampledToken, ...]]  # seq_id -> the tokens a step produced for it, in order


class ModelRunner:
    def __init__(
        self,
        config: EngineConfig,
        model_cfg: ModelConfig,
        model: LlamaForCausalLM,
        num_blocks: int,
        device: torch.device,
        dtype: torch.dtype,
        draft: DraftModel | None = None,
        *,
        max_model_len: int = 0,
        use_kernels: bool = False,
        kv_dtype: torch.dtype | None = None,
    ) -> None:
        self.model_cfg = model_cfg
        self.model = model
        self.block_size = config.block_size
        self.device = device
        self.dtype = dtype
        self.use_kernels = use_kernels
        # One block past the num_blocks the block manager hands out: CUDA graphs' padding rows write there.
        # kv_dtype: FP8 E4M3 with kv_cache_dtype="fp8" (the attention layers store into it and read from it).
        self.kv_cache = allocate_kv_cache(model_cfg, num_blocks + 1, config.block_size, kv_dtype or dtype, device)
        for i, attn in enumerate(model.attention_layers()):
            attn.bind_cache(self.kv_cache[0, i], self.kv_cache[1, i])
        self.draft = draft
        if draft is not None:
            draft.allocate_cache(num_blocks, config.block_size)
        self.sampler = Sampler()
        self.graphs: DecodeGraphs | None = None
        if use_kernels and device.type == "cuda" and config.cuda_graph_max_batch:
            self.graphs = DecodeGraphs(
                model,
                max_batch=min(config.cuda_graph_max_batch, config.max_num_seqs),
                max_blocks=-(-(max_model_len or model_cfg.max_position_embeddings) // config.block_size),
                pad_block=num_blocks,
                block_size=config.block_size,
                device=device,
            )
            self.graphs.capture()

    @torch.inference_mode()
    def launch(self, step: SchedulerOutput, after: Launched | None = None) -> Launched:
        """Queue the step's device work and return without waiting for it (on CUDA); `collect` waits.

        after: the launched step this one continues (async scheduling): every sequence here decodes the token that
        step samples, which is not on the host yet. Its ids are gathered on the device from `after`'s output, and
        the rows sample as if that token were appended (noise position, min_tokens)."""
        scheduled = step.scheduled
        if any(item.num_spec for item in scheduled):
            return Launched(done=self._run_speculative(scheduled))  # verification needs the host between passes
        batch = self.prepare(scheduled, placeholders=after is not None)
        if after is not None:
            batch = dataclasses.replace(batch, input_ids=after.next_input_ids([item.seq for item in scheduled]))
        sampling = [item for item in scheduled if item.samples]
        if self.graphs is not None and self.graphs.fits(batch):
            logits = self.graphs.run(batch)[batch.logit_rows]  # [R, V] float32
        else:
            hidden = self.model(batch.input_ids, batch.positions, batch.meta, batch.lora)  # [T, hidden]
            if not sampling:
                return Launched(done={})
            logits = self.model.compute_logits(hidden[batch.logit_rows])  # [R, V] float32
        if not sampling:
            return Launched(done={})
        seqs = [item.seq for item in sampling]
        rows = [DraftRow(s, (0,)) for s in seqs] if after is not None else seqs
        params = SamplingBatch.from_sequences(rows, self.model_cfg.vocab_size, self.device)
        bitmask = fill_bitmask(seqs, [()] * len(seqs), self.model_cfg.vocab_size, self.device)
        return Launched.of(seqs, self.sampler(logits, params, bitmask))

    def collect(self, launched: Launched) -> Sampled:
        """Wait for a launched step and bring its tokens (and logprobs) to the host."""
        if launched.done is not None:
            return launched.done
        return launched.to_host()

    def _run_speculative(self, scheduled: SequenceOf[ScheduledSeq]) -> Sampled:
        """A step where some sequence verifies drafts (each such item is a decode, so it samples)."""
        draft_probs = None
        if self.draft is not None:
            draft_probs = self.draft.propose([item for item in scheduled if item.num_spec])
        batch = self.prepare(scheduled)
        hidden = self.model(batch.input_ids, batch.positions, batch.meta, batch.lora)  # [T, hidden]
        sampling = [item for item in scheduled if item.samples]
        logits = self.model.compute_logits(hidden[batch.logit_rows])  # [R, V] float32
        return self._verify(sampling, logits, draft_probs)

    def prepare(self, scheduled: SequenceOf[ScheduledSeq], placeholders: bool = False) -> ForwardBatch:
        """placeholders: the steps' tokens are not on the host yet (async scheduling; the caller fills them in)."""
        chunks = []
        for item in scheduled:  # one pass of plain attribute reads: at 1,024 sequences every call here shows
            seq, start, n, k, slot = item.seq, item.start, item.num_new_tokens, item.num_spec, item.seq.lora_slot
            known = [0] * n if placeholders else seq.token_ids[start : start + n - k]
            chunks.append(
                Chunk(
                    known + seq.spec_token_ids if k else known,
                    start,
                    seq.block_table,
                    num_logits=1 + k if item.samples else 0,
                    lora_slot=slot,
                    lora_rank=seq.lora.rank if slot and seq.lora is not None else 0,
                )
            )
        return layout(chunks, self.block_size, self.device, batched_prefill=self.use_kernels)

    def _verify(self, sampling: list[ScheduledSeq], logits: torch.Tensor, draft_probs: torch.Tensor | None) -> Sampled:
        """Every sampling sequence with its k >= 0 drafts: rows of `logits` are theirs, k + 1 each, in order."""
        vocab, device = self.model_cfg.vocab_size, self.device
        seqs = [item.seq for item in sampling]
        ks = [item.num_spec for item in sampling]
        width = max(ks)
        first = [sum(k + 1 for k in ks[:i]) for i in range(len(ks))]  # each sequence's first row
        # Row j of a sequence is processed (penalties, min_tokens, ...) as if its first j drafts were accepted.
        rows = [DraftRow(s, tuple(s.spec_token_ids[:j])) for s, k in zip(seqs, ks, strict=True) for j in range(k + 1)]
        batch = SamplingBatch.from_sequences(rows, vocab, device)
        bitmask = fill_bitmask(seqs, [s.spec_token_ids for s in seqs], vocab, device)
        processed = self.sampler.process(logits, batch, bitmask)
        # [S, K + 1] row of (sequence, position); positions past a sequence's k repeat its last row (masked anyway)
        index = [[f + min(j, k) for j in range(width + 1)] for f, k in zip(first, ks, strict=True)]
        if draft_probs is not None:  # the draft model returned rows only for the sequences that drafted
            spread = torch.zeros(len(seqs), width, vocab, dtype=torch.float32, device=device)
            spread[torch.tensor([i for i, k in enumerate(ks) if k], device=device)] = draft_probs[:, :width]
            draft_probs = spread
        outputs = [s.num_output_tokens for s in seqs]  # output position of each sequence's first new token
        verified = verify(
            processed[torch.tensor(index, device=device)],
            _tensor([s.spec_token_ids + [0] * (width - len(s.spec_token_ids)) for s in seqs], device),
            _tensor(ks, device),
            batch.greedy[_tensor(first, device)],
            draft_probs,
            _tensor(
                [[accept_key(s.seed, o + j) for j in range(width)] for s, o in zip(seqs, outputs, strict=True)], device
            ).view(len(seqs), width, 2),
            _tensor(
                [[noise_key(s.seed, o + j) for j in range(width + 1)] for s, o in zip(seqs, outputs, strict=True)],
                device,
            ),
        )
        tokens = [row[: a + 1] for row, a in zip(verified.tokens.tolist(), verified.num_accepted.tolist(), strict=True)]
        return self._with_logprobs(seqs, first, tokens, logits)

    def _with_logprobs(
        self, seqs: list[Sequence], first: list[int], tokens: list[list[int]], logits: torch.Tensor
    ) -> Sampled:
        """Attach raw logprobs (one batched computation) to the tokens of the sequences that asked for them."""
        wants = [bool(s.request.response.logprobs or s.request.response.top_logprobs) for s in seqs]
        rows = [f + j for f, toks, w in zip(first, tokens, wants, strict=True) if w for j in range(len(toks))]
        if not rows:
            return {s.seq_id: tuple(SampledToken(t) for t in toks) for s, toks in zip(seqs, tokens, strict=True)}
        chosen_ids = [t for toks, w in zip(tokens, wants, strict=True) if w for t in toks]
        num_top = max(s.request.response.top_logprobs for s, w in zip(seqs, wants, strict=True) if w)
        chosen, top_ids, top_lp = compute_logprobs(
            logits[_tensor(rows, self.device)], _tensor(chosen_ids, self.device), num_top
        )
        picked = iter(zip(chosen.tolist(), top_ids.tolist(), top_lp.tolist(), strict=True))
        result: Sampled = {}
        for s, toks, w in zip(seqs, tokens, wants, strict=True):
            if not w:
                result[s.seq_id] = tuple(SampledToken(t) for t in toks)
                continue
            n = s.request.response.top_logprobs
            result[s.seq_id] = tuple(
                SampledToken(t, lp, tuple(zip(ti[:n], tl[:n], strict=True)))
                for t, (lp, ti, tl) in zip(toks, picked, strict=False)
            )
        return result


def _tensor(values: list, device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64, device=device)


@dataclass(slots=True)
class Launched:
    """A step whose device work is queued. On CUDA its outputs are copied to pinned host memory behind it and an
    event marks the end, so waiting for it never waits for a step queued after it."""

    seqs: list[Sequence] = field(default_factory=list)  # the sampling sequences, in row order
    device_ids: torch.Tensor | None = None  # [R] int64 sampled ids on the device (what a continuation reads)
    host: SamplerOutput | None = None  # the same outputs in host memory, valid once `ready` has completed
    ready: torch.cuda.Event | None = None
    done: Sampled | None = None  # computed synchronously (speculative steps, steps that sample nothing)

    @classmethod
    def of(cls, seqs: list[Sequence], out: SamplerOutput) -> Launched:
        if out.token_ids.device.type != "cuda":
            return cls(seqs, out.token_ids, out)
        host = SamplerOutput(
            _to_pinned(out.token_ids),
            None if out.logprobs is None else _to_pinned(out.logprobs),
            None if out.top_ids is None else _to_pinned(out.top_ids),
            None if out.top_logprobs is None else _to_pinned(out.top_logprobs),
        )
        ready = torch.cuda.Event()
        ready.record()
        return cls(seqs, out.token_ids, host, ready)

    def next_input_ids(self, seqs: SequenceOf[Sequence]) -> torch.Tensor:
        """The ids this step samples for `seqs` (each one of its rows), in that order, on the device."""
        assert self.device_ids is not None
        row = {s.seq_id: i for i, s in enumerate(self.seqs)}
        index = torch.tensor([row[s.seq_id] for s in seqs], dtype=torch.int64, pin_memory=self.ready is not None)
        return self.device_ids[index.to(self.device_ids.device, non_blocking=True)]

    def to_host(self) -> Sampled:
        if self.ready is not None:
            self.ready.synchronize()
        assert self.host is not None
        return _to_host(self.seqs, self.host)


def _to_pinned(t: torch.Tensor) -> torch.Tensor:
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    host.copy_(t, non_blocking=True)
    return host


def _to_host(seqs: list[Sequence], out: SamplerOutput) -> Sampled:
    """One device-to-host copy per tensor; rows are trimmed to each request's own top_logprobs."""
    token_ids = out.token_ids.tolist()
    if out.logprobs is None:
        return {seq.seq_id: (SampledToken(tok),) for seq, tok in zip(seqs, token_ids, strict=True)}
    assert out.top_ids is not None and out.top_logprobs is not None  # set together with logprobs
    chosen, top_ids, top_lp = out.logprobs.tolist(), out.top_ids.tolist(), out.top_logprobs.tolist()
    result: Sampled = {}
    for row, seq in enumerate(seqs):
        response = seq.request.response
        if not (response.logprobs or response.top_logprobs):
            result[seq.seq_id] = (SampledToken(token_ids[row]),)
            continue
        n = response.top_logprobs
        top = tuple(zip(top_ids[row][:n], top_lp[row][:n], strict=True))
        result[seq.seq_id] = (SampledToken(token_ids[row], chosen[row], top),)
    return result
