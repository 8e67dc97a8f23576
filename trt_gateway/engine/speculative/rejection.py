"""Verifying drafts against the target model, losslessly.

Greedy rows accept a draft while it equals the target's argmax; the first mismatch is replaced by that argmax.
Sampled rows use speculative rejection sampling (Leviathan et al. 2023, Chen et al. 2023): draft d at a position
is accepted with probability min(1, p(d) / q(d)), where p is the target's distribution there (after the request's
temperature, truncation and penalties) and q the one d was drawn from. At the first rejection the token is
redrawn from normalise(max(p - q, 0)); when every draft is accepted, one bonus token is drawn from p. Each output
token is then distributed exactly as p, whatever q is. N-gram drafts are deterministic: q is one-hot at d, so the
test is "accept with probability p(d)" and the redraw excludes d.

All randomness is counter-based (`sampler.uniform_noise`), keyed by the request seed and the output position,
with distinct salts for drafting, accepting and drawing, so the three are independent and a seeded request is
reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trt_gateway.engine.sampling.batch import noise_key
from trt_gateway.engine.sampling.sampler import gumbel_noise, uniform_noise

DRAFT_SALT = 0x6A09E667F3BCC908  # keys the draft model's draws
ACCEPT_SALT = 0xBB67AE8584CAA73B  # keys the acceptance tests


def draft_key(seed: int, position: int) -> tuple[int, int]:
    return noise_key(seed ^ DRAFT_SALT, position)


def accept_key(seed: int, position: int) -> tuple[int, int]:
    return noise_key(seed ^ ACCEPT_SALT, position)


@dataclass(frozen=True, slots=True)
class Verified:
    tokens: torch.Tensor  # [S, K + 1] int64: row s is valid up to num_accepted[s] + 1 tokens
    num_accepted: torch.Tensor  # [S] int64: drafts accepted (the token after them is the correction or bonus)


def verify(
    logits: torch.Tensor,
    drafts: torch.Tensor,
    num_drafts: torch.Tensor,
    greedy: torch.Tensor,
    draft_probs: torch.Tensor | None,
    accept_keys: torch.Tensor,
    sample_keys: torch.Tensor,
) -> Verified:
    """
    logits: [S, K + 1, V] what each position draws from (processed target logits; -inf = excluded)
    drafts: [S, K] int64 proposals, any valid id past num_drafts[s]
    num_drafts: [S] int64 in [0, K]
    greedy: [S] bool
    draft_probs: [S, K, V] the distribution each draft was drawn from; None when drafts are deterministic (n-gram)
    accept_keys: [S, K, 2] noise keys of the acceptance test at each draft position
    sample_keys: [S, K + 1, 2] noise keys for drawing the token at each position
    """
    num_seqs, width, vocab = logits.shape
    k = width - 1
    rows = torch.arange(num_seqs, device=logits.device)
    target = logits.argmax(dim=-1)  # [S, K + 1]
    if k:
        p = logits[:, :k].softmax(dim=-1)
        p_draft = p.gather(-1, drafts[..., None])[..., 0]  # [S, K]
        q_draft = (
            draft_probs.gather(-1, drafts[..., None])[..., 0] if draft_probs is not None else torch.ones_like(p_draft)
        )
        u = uniform_noise(accept_keys.reshape(-1, 2), 1).view(num_seqs, k)
        accept = torch.where(greedy[:, None], drafts == target[:, :k], u * q_draft < p_draft)
        accept &= torch.arange(k, device=logits.device)[None, :] < num_drafts[:, None]
        num_accepted = accept.long().cumprod(dim=-1).sum(dim=-1)
    else:
        num_accepted = torch.zeros(num_seqs, dtype=torch.int64, device=logits.device)

    at = num_accepted  # the position whose token is drawn now
    dist = logits[rows, at].softmax(dim=-1)  # [S, V]
    rejected = at < num_drafts
    if k and bool(rejected.any()):
        slot = at.clamp(max=k - 1)
        if draft_probs is not None:
            q = draft_probs[rows, slot]
        else:
            q = torch.nn.functional.one_hot(drafts[rows, slot], vocab).to(dist.dtype)
        dist = torch.where(rejected[:, None], (dist - q).clamp(min=0), dist)
    drawn = (dist.log() + gumbel_noise(sample_keys[rows, at], vocab)).argmax(dim=-1)
    final = torch.where(greedy, target[rows, at], drawn)
    tokens = torch.cat([drafts, drafts.new_zeros(num_seqs, 1)], dim=1)
    tokens[rows, at] = final
    return Verified(tokens, num_accepted)
