"""Sampler: pure processing functions against HF's logits processors, seeded draws, logprobs."""

from __future__ import annotations

import math

import pytest
import torch
from engine_helpers import make_request
from transformers.generation import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from trt_gateway.engine.sampling.batch import SamplingBatch, noise_key
from trt_gateway.engine.sampling.sampler import (
    Sampler,
    apply_min_p,
    apply_presence_frequency,
    apply_repetition_penalty,
    apply_top_k,
    apply_top_p,
    compute_logprobs,
    gumbel_noise,
    sample,
)
from trt_gateway.engine.sequence import Sequence

V = 50
NEG_INF = float("-inf")


def logits(rows: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, V, generator=torch.Generator().manual_seed(seed)) * 3


def seq(prompt: list[int], output: tuple[int, ...] = (), seed: int = 0, **request) -> Sequence:
    s = Sequence(make_request("r", **request), prompt, arrival_index=0, eos_token_ids=(2,), seed=seed)
    s.token_ids.extend(output)
    return s


def same_mask(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    finite = ~torch.isinf(ours)
    torch.testing.assert_close(ours[finite], theirs[finite])


def test_greedy_is_argmax():
    x = logits()
    keys = torch.zeros(4, 2, dtype=torch.int64)
    assert torch.equal(sample(x, torch.ones(4, dtype=torch.bool), keys), x.argmax(-1))


@pytest.mark.parametrize("k", [1, 5, 17])
def test_top_k_matches_hf(k):
    x = logits()
    same_mask(apply_top_k(x, torch.full((4,), k)), TopKLogitsWarper(k)(None, x.clone()))
    assert torch.equal(apply_top_k(x, torch.zeros(4, dtype=torch.int64)), x)  # 0 = off


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_top_p_matches_hf(p):
    x = logits()
    same_mask(apply_top_p(x, torch.full((4,), p)), TopPLogitsWarper(p)(None, x.clone()))


@pytest.mark.parametrize("p", [0.05, 0.3])
def test_min_p_matches_hf(p):
    x = logits()
    same_mask(apply_min_p(x, torch.full((4,), p)), MinPLogitsWarper(p)(None, x.clone()))


def test_per_row_parameters_apply_per_row():
    x = logits(2)
    out = apply_top_k(x, torch.tensor([1, 0]))
    assert (~torch.isinf(out[0])).sum() == 1 and not torch.isinf(out[1]).any()


def test_repetition_penalty_matches_hf_over_prompt_and_output():
    x = logits(1)
    tokens = torch.tensor([[3, 7, 7, 11, 40]])
    seen = torch.zeros(1, V, dtype=torch.bool)
    seen[0, tokens[0]] = True
    ours = apply_repetition_penalty(x, seen, torch.tensor([1.3]))
    torch.testing.assert_close(ours, RepetitionPenaltyLogitsProcessor(1.3)(tokens, x.clone()))


def test_presence_and_frequency_penalties():
    x = torch.zeros(1, V)
    counts = torch.zeros(1, V)
    counts[0, 4], counts[0, 9] = 3, 1
    out = apply_presence_frequency(x, counts, torch.tensor([0.5]), torch.tensor([0.25]))
    assert out[0, 4] == pytest.approx(-0.5 - 0.75) and out[0, 9] == pytest.approx(-0.75) and out[0, 0] == 0


def test_sampling_batch_penalises_output_tokens_only_for_presence():
    s = seq([4, 4, 5], output=[6, 6], sampling={"presence_penalty": 1.0, "frequency_penalty": 0.5}, temperature=1.0)
    batch = SamplingBatch.from_sequences([s], V, torch.device("cpu"))
    assert batch.output_counts[0, 6] == 2 and batch.output_counts[0, 4] == 0


def test_logit_bias_and_min_tokens_ban():
    s = seq([5], sampling={"logit_bias": {9: 100.0}}, stopping={"min_tokens": 2, "stop_token_ids": (9,)})
    batch = SamplingBatch.from_sequences([s], V, torch.device("cpu"))
    out = Sampler()(torch.zeros(1, V), batch)
    # 9 is boosted but it is a stop token and min_tokens is not reached: masked, so it cannot win
    assert out.token_ids.item() != 9
    s.token_ids.extend([1, 1])
    out = Sampler()(torch.zeros(1, V), SamplingBatch.from_sequences([s], V, torch.device("cpu")))
    assert out.token_ids.item() == 9


def test_seeded_draw_is_independent_of_batch_composition():
    x = logits(1, seed=3)
    target = seq([1, 2], seed=1234, temperature=0.9, sampling={"top_p": 0.95})
    others = [seq([3], seed=s, temperature=1.5, sampling={"top_k": 5}) for s in range(5)]
    alone = Sampler()(x, SamplingBatch.from_sequences([target], V, torch.device("cpu"))).token_ids
    batch = others[:2] + [target] + others[2:]
    together = Sampler()(
        torch.cat([logits(2, 8), x, logits(3, 9)]), SamplingBatch.from_sequences(batch, V, torch.device("cpu"))
    ).token_ids
    assert together[2] == alone[0]


def test_draws_follow_the_distribution():
    # Gumbel-max with counter-based noise must sample softmax(x): 4000 draws over 4 tokens.
    x = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    n = 4000
    keys = torch.tensor([noise_key(seed, 0) for seed in range(n)])
    drawn = sample(x.expand(n, 4), torch.zeros(n, dtype=torch.bool), keys)
    freq = torch.bincount(drawn, minlength=4).float() / n
    torch.testing.assert_close(freq, x.softmax(-1)[0], atol=0.03, rtol=0)


def test_noise_differs_by_position_and_seed():
    keys = torch.tensor([noise_key(1, 0), noise_key(1, 1), noise_key(2, 0), noise_key(1, 0)])
    g = gumbel_noise(keys, V)
    assert not torch.equal(g[0], g[1]) and not torch.equal(g[0], g[2]) and torch.equal(g[0], g[3])
    assert torch.isfinite(g).all()


def test_logprobs_are_raw_log_softmax_with_top_n():
    x = logits(2)
    chosen, top_ids, top_lp = compute_logprobs(x, torch.tensor([4, 7]), 3)
    ref = x.log_softmax(-1)
    torch.testing.assert_close(chosen, ref[[0, 1], [4, 7]])
    torch.testing.assert_close(top_lp, ref.topk(3).values)
    assert torch.equal(top_ids, ref.topk(3).indices)
    assert math.isclose(float(top_lp[0].exp().sum()), float(ref[0].exp().topk(3).values.sum()), rel_tol=1e-5)


def test_sampler_logprobs_ignore_temperature():
    x = logits(1)
    s = seq([1], temperature=0.5, logprobs=True, top_logprobs=2)
    out = Sampler()(x, SamplingBatch.from_sequences([s], V, torch.device("cpu")))
    torch.testing.assert_close(out.logprobs, x.log_softmax(-1)[0, out.token_ids])


def test_a_forbidden_token_is_never_drawn():
    """Regression: with 24-bit uniforms the largest value rounded to 1.0 in float32, its Gumbel noise was +inf and
    that token won the draw even at -inf (about once per 2,000 rows of an 8,192-token vocabulary). The uniforms
    must stay strictly inside (0, 1) so every noise value is finite."""
    from trt_gateway.engine.sampling.sampler import uniform_noise

    vocab, rows = 8192, 4096
    keys = torch.tensor([noise_key(seed, 3) for seed in range(rows)], dtype=torch.int64)
    u = uniform_noise(keys, vocab)
    assert float(u.min()) > 0.0 and float(u.max()) < 1.0
    logits = torch.full((rows, vocab), float("-inf"))
    logits[:, 74] = 0.0
    drawn = sample(logits, torch.zeros(rows, dtype=torch.bool), keys)
    assert (drawn == 74).all()
    top = ((1 << 23) - 1 + 0.5) * (1.0 / (1 << 23))  # the largest value the formula can produce
    assert torch.tensor(top, dtype=torch.float32) < 1.0
