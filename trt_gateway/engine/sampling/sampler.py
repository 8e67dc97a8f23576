"""Sampling on the device: small pure functions over a batch of logits [B, V], composed by `Sampler`.

Order, as HF's generate applies its processors: logit bias, min_tokens, penalties, temperature, top-k, top-p, min-p,
then a draw. Greedy rows (temperature below GREEDY_TEMPERATURE, 1e-5) take the argmax of the same processed logits
(temperature and truncation never move the argmax), so penalties and bias apply to greedy decoding too.

Draws use counter-based noise: the Gumbel noise of row b at vocab entry v is a hash of (request seed, output
position, v). A seeded request therefore samples the same tokens whatever else is in the batch, on CPU and CUDA
alike, and again after being preempted and recomputed, without per-request generator state.

Logprobs are the raw log-softmax of the model's logits (vLLM's default), not of the processed distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trt_gateway.engine.sampling.batch import SamplingBatch
from trt_gateway.engine.structured_output import apply_bitmask
from trt_gateway.types import GREEDY_TEMPERATURE

_MASK32 = 0xFFFFFFFF


def apply_logit_bias(logits: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor) -> None:
    """In place. logits: [B, V]; rows, cols, values: [K] sparse (row, token) -> added bias."""
    logits.index_put_((rows, cols), values, accumulate=True)


def mask_tokens(logits: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> None:
    """In place: forbid (row, token) pairs [K], e.g. stop tokens before min_tokens is reached."""
    logits.index_put_((rows, cols), torch.full((), float("-inf"), device=logits.device))


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """HF's rule over prompt + output tokens: a seen token's logit is divided by penalty if > 0, else multiplied.

    logits: [B, V]; seen: [B, V] bool; penalty: [B] (1.0 = off).
    """
    p = penalty[:, None]
    penalised = torch.where(logits > 0, logits / p, logits * p)
    return torch.where(seen, penalised, logits)


def apply_presence_frequency(
    logits: torch.Tensor, counts: torch.Tensor, presence: torch.Tensor, frequency: torch.Tensor
) -> torch.Tensor:
    """OpenAI's rule over output tokens only. counts: [B, V] occurrences; presence, frequency: [B]."""
    return logits - presence[:, None] * (counts > 0) - frequency[:, None] * counts


def apply_temperature(logits: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """temperature: [B]; greedy rows (below GREEDY_TEMPERATURE, e.g. 0) are left unscaled: their argmax is taken."""
    t = torch.where(temperature >= GREEDY_TEMPERATURE, temperature, torch.ones_like(temperature))
    return logits / t[:, None]


def apply_top_k(logits: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """Keep each row's k largest logits (ties at the k-th value are kept). top_k: [B] int64, 0 = off."""
    vocab = logits.shape[-1]
    k = torch.where((top_k > 0) & (top_k < vocab), top_k, torch.full_like(top_k, vocab))
    sorted_desc = logits.sort(dim=-1, descending=True).values
    kth = sorted_desc.gather(1, (k - 1)[:, None])  # [B, 1]
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Nucleus: keep the smallest set of most likely tokens whose mass reaches top_p (at least one). top_p: [B]."""
    sorted_asc, order = logits.sort(dim=-1)
    cum = sorted_asc.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cum <= (1 - top_p[:, None])  # the unlikely tail, summing to at most 1 - top_p
    remove_sorted[:, -1] = False
    remove = remove_sorted.scatter(1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def apply_min_p(logits: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Drop tokens less likely than min_p times the most likely one. min_p: [B], 0 = off."""
    probs = logits.softmax(dim=-1)
    threshold = min_p[:, None] * probs.max(dim=-1, keepdim=True).values
    return logits.masked_fill(probs < threshold, float("-inf"))


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """An avalanche hash of 32-bit values held in int64 (constants < 2**31 so no product overflows int64)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x5BD1E995) & _MASK32
    return x ^ (x >> 16)


def uniform_noise(noise_keys: torch.Tensor, width: int) -> torch.Tensor:
    """noise_keys: [B, 2] int64 32-bit halves of a per-(seed, position) key -> [B, width] float32 U(0, 1) noise."""
    cols = torch.arange(width, device=noise_keys.device, dtype=torch.int64)
    h = _mix32(noise_keys[:, :1] ^ ((cols[None, :] * 0x9E3779B9) & _MASK32))
    h = _mix32(h ^ noise_keys[:, 1:])
    # 23 random bits: (k + 0.5) / 2**23 stays strictly inside (0, 1) in float32. With 24 bits the largest value
    # rounds to 1.0, whose Gumbel noise is +inf: that entry then wins the draw even where the logit is -inf.
    return ((h >> 9).float() + 0.5) * (1.0 / (1 << 23))


def gumbel_noise(noise_keys: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """noise_keys: [B, 2] -> [B, V] float32 Gumbel(0, 1) noise."""
    return -torch.log(-torch.log(uniform_noise(noise_keys, vocab_size)))


def sample(
    logits: torch.Tensor, greedy: torch.Tensor, noise_keys: torch.Tensor, all_greedy: bool | None = None
) -> torch.Tensor:
    """Gumbel-max draw from softmax(logits) (masked entries are -inf); greedy rows: argmax. -> [B] int64

    all_greedy: whether every row is greedy, when the caller knows it on the host (saves a device sync)."""
    if all_greedy if all_greedy is not None else bool(greedy.all()):
        return logits.argmax(dim=-1)
    drawn = (logits + gumbel_noise(noise_keys, logits.shape[-1])).argmax(dim=-1)
    return torch.where(greedy, logits.argmax(dim=-1), drawn)


@dataclass(frozen=True, slots=True)
class SamplerOutput:
    token_ids: torch.Tensor  # [B] int64
    logprobs: torch.Tensor | None  # [B] float32, raw log-softmax of the chosen tokens
    top_ids: torch.Tensor | None  # [B, N] int64
    top_logprobs: torch.Tensor | None  # [B, N] float32


def compute_logprobs(
    logits: torch.Tensor, token_ids: torch.Tensor, num_top: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """logits: [B, V] raw; token_ids: [B] -> (chosen [B], top ids [B, N], top logprobs [B, N])."""
    logprobs = logits.log_softmax(dim=-1)
    chosen = logprobs.gather(1, token_ids[:, None])[:, 0]
    top = logprobs.topk(num_top, dim=-1)
    return chosen, top.indices, top.values


class Sampler:
    """Applies the enabled processing steps of a SamplingBatch; steps no row uses are skipped."""

    def __call__(
        self, logits: torch.Tensor, batch: SamplingBatch, bitmask: torch.Tensor | None = None
    ) -> SamplerOutput:
        """logits: [B, V] float32 straight from the model; bitmask: guided decoding's allowed tokens per row."""
        if batch.plain_greedy and bitmask is None:
            # Nothing can move an argmax here: skip the [B, V] copies of `process` (1 GiB per step at batch 1,024
            # with a 128k vocabulary).
            token_ids = logits.argmax(dim=-1)
        else:
            token_ids = sample(self.process(logits, batch, bitmask), batch.greedy, batch.noise_keys, batch.all_greedy)
        if batch.num_top_logprobs < 0:
            return SamplerOutput(token_ids, None, None, None)
        chosen, top_ids, top_lp = compute_logprobs(logits, token_ids, batch.num_top_logprobs)
        return SamplerOutput(token_ids, chosen, top_ids, top_lp)

    def process(
        self, logits: torch.Tensor, batch: SamplingBatch, bitmask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """-> the logits each row draws from (grammar, bias, penalties, temperature, truncation applied); a new
        tensor."""
        x = logits.clone()
        if bitmask is not None:
            apply_bitmask(x, bitmask)
        if batch.bias is not None:
            apply_logit_bias(x, *batch.bias)
        if batch.banned is not None:
            mask_tokens(x, *batch.banned)
        if batch.repetition_penalty is not None and batch.seen is not None:
            x = apply_repetition_penalty(x, batch.seen, batch.repetition_penalty)
        if batch.output_counts is not None and batch.presence is not None and batch.frequency is not None:
            x = apply_presence_frequency(x, batch.output_counts, batch.presence, batch.frequency)
        x = apply_temperature(x, batch.temperature)
        if batch.top_k is not None:
            x = apply_top_k(x, batch.top_k)
        if batch.top_p is not None:
            x = apply_top_p(x, batch.top_p)
        if batch.min_p is not None:
            x = apply_min_p(x, batch.min_p)
        return x
