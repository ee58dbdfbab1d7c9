"""What an ε means for an attacker: the largest true-positive rate any membership test can reach at a
given false-positive rate, from a peer's ledger.

(ε, δ)-DP bounds every test of "was this record in the training data" (Kairouz, Oh & Viswanath,
ICML 2015; Dong, Roth & Su, JRSS-B 2022, the hypothesis-testing view):

    TPR ≤ min( e^ε · FPR + δ,  1 − e^(−ε) · (1 − δ − FPR) )

and a mechanism that is (ε(δ), δ)-DP for every δ satisfies the bound at every δ, so the tightest is
the minimum over δ. The ledger's accountant gives ε(δ) for any δ; :func:`tpr_bound` takes the
minimum over a grid of δ (every point of the grid is a valid bound, so the grid only costs
tightness, never soundness).

Where every event is a Gaussian mechanism without subsampling (q = 1: full-batch DP-SGD, the
accounted validation and selection scores), the composition is exactly μ-Gaussian DP with
μ = sqrt(Σ steps / σ²), and the tight bound is TPR ≤ Φ(Φ⁻¹(FPR) + μ) (Dong, Roth & Su).
With subsampling (q < 1), :func:`gaussian_mu` reports the central-limit μ = q·sqrt(T(e^(1/σ²) − 1))
(Bu et al., 2020) as an approximation only; the bound used for checks is then the (ε, δ) one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from statistics import NormalDist

from secure_pcft.privacy.accounting import epsilon_spent, history_from_events
from secure_pcft.privacy.events import DpEvent

FPRS = (0.01, 0.001)
DELTA_GRID = tuple(10.0**-k for k in range(1, 13))  # 1e-1 … 1e-12
_N = NormalDist()


def tpr_bound_eps_delta(epsilon: float, delta: float, fpr: float) -> float:
    """The largest TPR at ``fpr`` of any test against an (ε, δ)-DP mechanism (in [fpr, 1])."""
    if not math.isfinite(epsilon):
        return 1.0
    one = math.exp(epsilon) * fpr + delta
    two = 1.0 - math.exp(-epsilon) * (1.0 - delta - fpr)
    return min(1.0, max(fpr, min(one, two)))


def tpr_bound_gdp(mu: float, fpr: float) -> float:
    """The largest TPR at ``fpr`` against a μ-GDP mechanism: Φ(Φ⁻¹(FPR) + μ)."""
    return _N.cdf(_N.inv_cdf(fpr) + mu)


def gaussian_mu(events: Iterable[DpEvent]) -> tuple[float, bool]:
    """(μ, exact): exact μ-GDP when every event is unsubsampled (q = 1), else the CLT value."""
    history = history_from_events(events)
    if not history:
        return 0.0, True
    if any(sigma == 0 for sigma, _, _ in history):
        return math.inf, True
    exact = all(q >= 1.0 for _, q, _ in history)
    mu_sq = 0.0
    for sigma, q, steps in history:
        if q >= 1.0:
            mu_sq += steps / sigma**2
        else:
            mu_sq += q**2 * steps * (math.exp(1.0 / sigma**2) - 1.0)
    return math.sqrt(mu_sq), exact


def tpr_bound(
    events: Sequence[DpEvent],
    accountant: str,
    fpr: float,
    deltas: Sequence[float] = DELTA_GRID,
) -> float:
    """The tightest sound TPR bound at ``fpr`` for the composition of ``events``: the exact GDP
    bound when every event is unsubsampled, else the minimum of the (ε(δ), δ) bound over
    ``deltas`` (ε(δ) from ``accountant``)."""
    if not events:
        return fpr
    mu, exact = gaussian_mu(events)
    if exact:
        return tpr_bound_gdp(mu, fpr) if math.isfinite(mu) else 1.0
    return min(tpr_bound_eps_delta(epsilon_spent(events, d, accountant), d, fpr) for d in deltas)
