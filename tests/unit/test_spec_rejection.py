"""Speculative rejection sampling on synthetic distributions: lossless by a chi-square test, greedy by construction.

Each test verifies many independent rows at once (different seeds = different noise). The target distribution p
and the draft distribution q are fixed per test, so the law of the output is known exactly.
"""

from __future__ import annotations

import pytest
import torch
from spec_stats import chi_square_p_value

from trt_gateway.engine.sampling.batch import noise_key
from trt_gateway.engine.sampling.sampler import gumbel_noise
from trt_gateway.engine.speculative.rejection import accept_key, draft_key, verify

N = 40_000
V = 6
ALPHA = 1e-3  # seeds are fixed, so a pass is deterministic; the threshold only guards against a real bias


def keys(fn, seeds: range, positions: int) -> torch.Tensor:
    return torch.tensor([[fn(s, p) for p in range(positions)] for s in seeds], dtype=torch.int64)


def draws(probs: torch.Tensor, seeds: range, position: int) -> torch.Tensor:
    """Draft tokens drawn from probs [V] with the draft noise of each seed."""
    k = torch.tensor([draft_key(s, position) for s in seeds], dtype=torch.int64)
    return (probs.log()[None, :] + gumbel_noise(k, V)).argmax(dim=-1)


P0 = torch.tensor([0.30, 0.25, 0.20, 0.15, 0.10, 0.0])  # a truncated target (top-k style zero)
P1 = torch.tensor([0.05, 0.05, 0.10, 0.20, 0.0, 0.60])
Q0 = torch.tensor([0.10, 0.40, 0.05, 0.05, 0.20, 0.20])  # puts mass where p has none
Q1 = torch.tensor([0.30, 0.10, 0.10, 0.10, 0.30, 0.10])


def logits_of(*ps: torch.Tensor) -> torch.Tensor:
    return torch.stack([p.log() for p in ps])[None].expand(N, -1, -1)


@pytest.mark.parametrize("mode", ["draft_model", "ngram"])
def test_sampled_output_has_the_target_distribution(mode: str):
    seeds = range(N)
    if mode == "draft_model":
        drafts = torch.stack([draws(Q0, seeds, 0), draws(Q1, seeds, 1)], dim=1)
        q = torch.stack([Q0, Q1])[None].expand(N, -1, -1)
    else:  # deterministic proposals: the same two tokens every time, one that p likes and one it rarely does
        drafts = torch.tensor([[1, 0]]).expand(N, -1)
        q = None
    out = verify(
        logits_of(P0, P1, P0),
        drafts.contiguous(),
        torch.full((N,), 2),
        torch.zeros(N, dtype=torch.bool),
        q,
        keys(accept_key, seeds, 2),
        keys(noise_key, seeds, 3),
    )
    first = out.tokens[:, 0]
    assert chi_square_p_value(torch.bincount(first, minlength=V), P0) > ALPHA
    # The second token exists when the first draft was accepted; given that, it must follow P1.
    second = out.tokens[out.num_accepted >= 1, 1]
    assert second.numel() > 1000
    assert chi_square_p_value(torch.bincount(second, minlength=V), P1) > ALPHA
    # Both outcomes happen: this exercises acceptance and the residual redraw.
    assert 0 < int((out.num_accepted == 0).sum()) < N


def test_full_acceptance_draws_a_bonus_token_from_the_last_position():
    seeds = range(N)
    drafts = torch.zeros(N, 1, dtype=torch.int64)  # token 0, always in p's support
    q = torch.nn.functional.one_hot(drafts, V).float()
    out = verify(
        logits_of(P1, P0),
        drafts,
        torch.ones(N, dtype=torch.int64),
        torch.zeros(N, dtype=torch.bool),
        q,
        keys(accept_key, seeds, 1),
        keys(noise_key, seeds, 2),
    )
    accepted = out.num_accepted == 1
    assert 0.03 < accepted.float().mean() < 0.07  # P1[0] = 0.05
    bonus = out.tokens[accepted, 1]
    assert chi_square_p_value(torch.bincount(bonus, minlength=V), P0, min_expected=1.0) > ALPHA


def test_greedy_accepts_the_matching_prefix_then_corrects():
    logits = torch.tensor([[[0.0, 5, 1, 0], [3, 0, 0, 0], [0, 0, 0, 9], [0, 2, 0, 0]]])  # argmax 1, 0, 3, 1
    cases = {  # drafts -> expected tokens (accepted drafts, then the correction or bonus)
        (1, 0, 3): [1, 0, 3, 1],
        (1, 2, 3): [1, 0],
        (2, 0, 3): [1],
    }
    for drafts, expected in cases.items():
        out = verify(
            logits,
            torch.tensor([drafts]),
            torch.tensor([3]),
            torch.tensor([True]),
            None,
            torch.zeros(1, 3, 2, dtype=torch.int64),
            torch.zeros(1, 4, 2, dtype=torch.int64),
        )
        n = int(out.num_accepted[0]) + 1
        assert out.tokens[0, :n].tolist() == expected


def test_rows_ignore_drafts_past_their_own_count():
    logits = torch.tensor([[[0.0, 5, 1], [0, 0, 7], [9, 0, 0]]] * 2)  # argmax 1, 2, 0
    drafts = torch.tensor([[1, 2], [1, 2]])
    out = verify(
        logits,
        drafts,
        torch.tensor([2, 1]),
        torch.tensor([True, True]),
        None,
        torch.zeros(2, 2, 2, dtype=torch.int64),
        torch.zeros(2, 3, 2, dtype=torch.int64),
    )
    assert out.num_accepted.tolist() == [2, 1]
    assert out.tokens[0].tolist() == [1, 2, 0]
    assert out.tokens[1, :2].tolist() == [1, 2]  # the second row had one draft: its bonus comes from position 1


def test_no_drafts_is_plain_sampling():
    """k = 0 (a sequence that did not speculate in a verifying step) draws exactly as the sampler would."""
    from trt_gateway.engine.sampling.sampler import sample

    seeds = range(2000)
    x = torch.randn(len(seeds), 1, 50)
    k = keys(noise_key, seeds, 1)
    out = verify(
        x,
        torch.zeros(len(seeds), 0, dtype=torch.int64),
        torch.zeros(len(seeds), dtype=torch.int64),
        torch.zeros(len(seeds), dtype=torch.bool),
        None,
        torch.zeros(len(seeds), 0, 2, dtype=torch.int64),
        k,
    )
    plain = sample(x[:, 0], torch.zeros(len(seeds), dtype=torch.bool), k[:, 0])
    assert (out.tokens[:, 0] == plain).float().mean() > 0.999  # log-softmax vs raw logits: rounding only
