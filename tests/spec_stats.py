"""Goodness of fit for the speculative-decoding distribution tests (no scipy: torch has the incomplete gamma)."""

from __future__ import annotations

import torch


def chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor, min_expected: float = 5.0) -> float:
    """Pearson's test of observed counts against exact probabilities. Cells expected < min_expected are pooled into
    one (the test's approximation needs it); a cell of probability 0 that was observed fails outright."""
    counts, probs = counts.double().flatten(), probs.double().flatten()
    total = counts.sum()
    if bool(((probs == 0) & (counts > 0)).any()):
        return 0.0
    expected = probs * total
    small = expected < min_expected
    obs = torch.cat([counts[~small], counts[small].sum()[None]])
    exp = torch.cat([expected[~small], expected[small].sum()[None]])
    keep = exp > 0
    obs, exp = obs[keep], exp[keep]
    stat = ((obs - exp) ** 2 / exp).sum()
    dof = obs.numel() - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), stat / 2))
