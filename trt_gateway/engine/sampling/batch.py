"""The per-step tensors the sampler needs, built from the sampling rows' requests.

A step's rows are the sequences that sample this step, in the order of the logits rows. Optional tensors stay
None when no row uses the feature, so an all-greedy batch costs one argmax. Noise keys are derived on the host from
(seed, output position): see `sampler.gumbel_noise`.
"""

from __future__ import annotations

from collections.abc import Sequence as SequenceOf
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from trt_gateway.engine.sequence import Sequence
from trt_gateway.types import GenerateRequest

_MASK64 = (1 << 64) - 1


class SamplingRow(Protocol):
    """What one logits row is sampled for: a sequence, or a sequence with some drafts assumed accepted."""

    @property
    def request(self) -> GenerateRequest: ...
    @property
    def seed(self) -> int: ...
    @property
    def num_output_tokens(self) -> int: ...
    @property
    def token_ids(self) -> SequenceOf[int]: ...
    @property
    def output_token_ids(self) -> SequenceOf[int]: ...
    @property
    def stop_token_ids(self) -> frozenset[int]: ...
    @property
    def grammar(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class DraftRow:
    """Row j of a verify step: the sequence as it is once its first j drafts are accepted, so penalties, min_tokens
    and the noise position are those the token at that position would have been sampled with."""

    seq: Sequence
    drafts: tuple[int, ...]

    @property
    def request(self) -> GenerateRequest:
        return self.seq.request

    @property
    def seed(self) -> int:
        return self.seq.seed

    @property
    def num_output_tokens(self) -> int:
        return self.seq.num_output_tokens + len(self.drafts)

    @property
    def token_ids(self) -> list[int]:
        return self.seq.token_ids + list(self.drafts)

    @property
    def output_token_ids(self) -> list[int]:
        return self.seq.output_token_ids + list(self.drafts)

    @property
    def stop_token_ids(self) -> frozenset[int]:
        return self.seq.stop_token_ids

    @property
    def grammar(self) -> Any:
        return self.seq.grammar


def noise_key(seed: int, position: int) -> tuple[int, int]:
    """SplitMix64 of (seed, position) -> two 32-bit halves. Same inputs, same noise, on every device."""
    x = (seed * 0x9E3779B97F4A7C15 + position * 0xD1B54A32D192ED03 + 0x632BE59BD9B4E019) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    x ^= x >> 31
    return x & 0xFFFFFFFF, x >> 32


@dataclass(frozen=True, slots=True)
class SamplingBatch:
    temperature: torch.Tensor  # [B] float32
    greedy: torch.Tensor  # [B] bool
    noise_keys: torch.Tensor  # [B, 2] int64
    top_k: torch.Tensor | None = None  # [B] int64, 0 = off
    top_p: torch.Tensor | None = None  # [B] float32
    min_p: torch.Tensor | None = None  # [B] float32
    repetition_penalty: torch.Tensor | None = None  # [B] float32
    seen: torch.Tensor | None = None  # [B, V] bool: token occurs in prompt or output
    presence: torch.Tensor | None = None  # [B] float32
    frequency: torch.Tensor | None = None  # [B] float32
    output_counts: torch.Tensor | None = None  # [B, V] float32
    bias: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # rows [K], token ids [K], values [K]
    banned: tuple[torch.Tensor, torch.Tensor] | None = None  # rows [K], token ids [K] forced to -inf
    num_top_logprobs: int = -1  # -1: no row wants logprobs; else top alternatives to compute (max over rows)
    all_greedy: bool | None = None  # known on the host: every row is greedy (None: unknown, check on the device)

    @property
    def plain_greedy(self) -> bool:
        """Every row greedy and nothing that moves an argmax (bias, min_tokens bans, penalties) is set."""
        return bool(self.all_greedy) and (
            self.bias is None and self.banned is None and self.repetition_penalty is None and self.presence is None
        )

    @classmethod
    def from_sequences(cls, seqs: SequenceOf[SamplingRow], vocab_size: int, device: torch.device) -> SamplingBatch:
        params = [s.request.sampling for s in seqs]

        def f32(values: list[float]) -> torch.Tensor:
            return _to_device(values, torch.float32, device)

        def column(values: list[float], off: float) -> torch.Tensor | None:
            return f32(values) if any(v != off for v in values) else None

        top_k = [p.top_k for p in params]
        all_greedy = all(p.greedy for p in params)
        if all_greedy:  # greedy rows never read their noise or temperature: fill on the device, no host lists
            temperature = torch.zeros(len(seqs), dtype=torch.float32, device=device)
            greedy = torch.ones(len(seqs), dtype=torch.bool, device=device)
            noise_keys = torch.zeros(len(seqs), 2, dtype=torch.int64, device=device)
        else:
            temperature = f32([p.temperature for p in params])
            greedy = _to_device([p.greedy for p in params], torch.bool, device)
            keys = [noise_key(s.seed, s.num_output_tokens) for s in seqs]
            noise_keys = _to_device(keys, torch.int64, device)
        rep = column([p.repetition_penalty for p in params], 1.0)
        # presence and frequency travel as a pair so the sampler needs one check
        penalised = any(p.presence_penalty or p.frequency_penalty for p in params)
        wants = [s.request.response for s in seqs]
        num_top = max((r.top_logprobs if (r.logprobs or r.top_logprobs) else -1) for r in wants)
        return cls(
            temperature=temperature,
            greedy=greedy,
            noise_keys=noise_keys,
            top_k=_to_device(top_k, torch.int64, device) if any(top_k) else None,
            top_p=column([p.top_p for p in params], 1.0),
            min_p=column([p.min_p for p in params], 0.0),
            repetition_penalty=rep,
            seen=_token_mask(seqs, vocab_size, device) if rep is not None else None,
            presence=f32([p.presence_penalty for p in params]) if penalised else None,
            frequency=f32([p.frequency_penalty for p in params]) if penalised else None,
            output_counts=_output_counts(seqs, vocab_size, device) if penalised else None,
            bias=_bias(seqs, device),
            banned=_banned_before_min_tokens(seqs, device),
            num_top_logprobs=num_top,
            all_greedy=all_greedy,
        )


def _padded(rows: list[list[int]], device: torch.device, pad: int) -> torch.Tensor:
    width = max(1, max(len(r) for r in rows))
    return _to_device([r + [pad] * (width - len(r)) for r in rows], torch.int64, device)


def _token_mask(seqs: SequenceOf[SamplingRow], vocab_size: int, device: torch.device) -> torch.Tensor:
    """[B, V] bool: which tokens occur in each row's prompt + output tokens."""
    tokens = _padded([list(s.token_ids) for s in seqs], device, vocab_size)
    mask = torch.zeros(len(seqs), vocab_size + 1, dtype=torch.bool, device=device)  # column V absorbs padding
    mask.scatter_(1, tokens, True)
    return mask[:, :vocab_size]


def _output_counts(seqs: SequenceOf[SamplingRow], vocab_size: int, device: torch.device) -> torch.Tensor:
    tokens = _padded([list(s.output_token_ids) for s in seqs], device, vocab_size)
    counts = torch.zeros(len(seqs), vocab_size + 1, dtype=torch.float32, device=device)
    counts.scatter_add_(1, tokens, torch.ones_like(tokens, dtype=torch.float32))
    return counts[:, :vocab_size]


def _bias(seqs: SequenceOf[SamplingRow], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    entries = [(row, tok, val) for row, s in enumerate(seqs) for tok, val in s.request.sampling.logit_bias.items()]
    if not entries:
        return None
    rows, toks, vals = zip(*entries, strict=True)
    return (
        _to_device(rows, torch.int64, device),
        _to_device(toks, torch.int64, device),
        _to_device(vals, torch.float32, device),
    )


def _banned_before_min_tokens(seqs: SequenceOf[SamplingRow], device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Stop tokens (EOS unless ignore_eos, and stop_token_ids) of rows that have not produced min_tokens yet.
    Guided rows are exempt: their grammar decides when the output is complete."""
    entries = [
        (row, tok)
        for row, s in enumerate(seqs)
        if s.num_output_tokens < s.request.stopping.min_tokens and s.grammar is None
        for tok in s.stop_token_ids
    ]
    if not entries:
        return None
    rows, toks = zip(*entries, strict=True)
    return _to_device(rows, torch.int64, device), _to_device(toks, torch.int64, device)


def _to_device(values: SequenceOf[Any], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A host list on the device without waiting for the GPU: `torch.tensor(..., device="cuda")` synchronises the
    stream, which would stall async scheduling behind the step in flight; a pinned copy is queued instead."""
    if device.type != "cuda":
        return torch.tensor(values, dtype=dtype, device=device)
    return torch.tensor(values, dtype=dtype, pin_memory=True).to(device, non_blocking=True)
