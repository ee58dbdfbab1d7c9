"""Empirical ε lower bounds from a one-run audit (Steinke, Nasr & Jagielski 2023) — TM-01, TM-02.

Setting ("Privacy Auditing with One (1) Training Run", NeurIPS 2023): ``m`` canaries (audit
examples) are each included in the training data independently with probability ½; everything
else is fixed. After training, the auditor scores every canary, guesses "in" for the ``k_pos``
highest scores and "out" for the ``k_neg`` lowest, abstains on the rest, and counts the ``v``
correct guesses among the ``r = k_pos + k_neg`` made.

Bound used: the paper's Theorem 5.2 in the form of its Appendix D (``p_value_DP_audit``). If the
training run is (ε, δ)-DP with respect to adding/removing one canary, then

    P[V >= v] <= P[Binomial(r, q) >= v] + 2·m·δ·max_{1<=i<=v} (1/i)·P[v − i <= Binomial(r, q) < v],

with q = e^ε / (1 + e^ε). The bound ε_lb is the largest ε whose p-value is still below
``1 − confidence``: every smaller ε is rejected at that level, so ε_lb exceeds the true ε with
probability at most 5% (at 95% confidence) — **sound** whatever the attack, the model or the
score, as long as (1) inclusion is a fair coin per canary, independent of everything else,
(2) the guesses depend only on the released output and on data that does not depend on the coins,
and (3) the number of guesses is fixed before looking at the outcome. Choosing (k_pos, k_neg) from
a grid after seeing the scores is allowed only with a union bound: :func:`one_run_epsilon` splits
the error probability evenly over the grid (Bonferroni).

Why not a plain Clopper–Pearson bound on the guess accuracy? For δ = 0 the paper's bound and
"logit of the one-sided CP lower bound on v/r" coincide (both invert the Binomial(r, q) tail);
for δ > 0 only the paper's extra term keeps the bound sound, so it is the one implemented.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from secure_pcft.audit.metrics import binomial_pmf_range, binomial_sf
from secure_pcft.errors import AuditError

EPS_SEARCH_MAX = 100.0
"""ε above which the search stops (reported as is; the p-value is then numerically 0 anyway)."""


def p_value_one_run(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """P-value of observing >= ``v`` correct guesses out of ``r`` under an (ε, δ)-DP null.

    Args:
        m: canaries, each included independently with probability ½.
        r: guesses made (abstentions excluded).
        v: correct guesses.
        eps, delta: the DP guarantee of the null hypothesis.

    Raises:
        AuditError: counts out of 0 <= v <= r <= m, ε < 0 or δ outside [0, 1].
    """
    if not 0 <= v <= r <= m or eps < 0 or not 0.0 <= delta <= 1.0:
        raise AuditError(f"need 0 <= v <= r <= m, ε >= 0, δ in [0, 1]; got {v}/{r}/{m}, {eps}")
    q = 1.0 / (1.0 + math.exp(-eps))  # accuracy of ε-DP randomised response
    beta = binomial_sf(v, r, q)
    if delta == 0 or v == 0:
        return min(1.0, beta)
    # cumulative_i = P[v − i <= Binomial(r, q) < v] for i = 1..v, all at once (v can be 10^4).
    pmf = binomial_pmf_range(v, r, q)  # P[B = k], k = 0..v-1
    cumulative = np.cumsum(pmf[::-1])  # i-th entry: sum over k = v-i..v-1
    alpha = float(np.max(cumulative / np.arange(1, v + 1)))
    return min(1.0, beta + alpha * delta * 2 * m)


def epsilon_lower_bound(
    m: int, r: int, v: int, delta: float, confidence: float = 0.95, tolerance: float = 1e-4
) -> float:
    """Largest ε that the observed guesses reject at ``confidence`` (0.0 if none is rejected).

    Raises:
        AuditError: bad counts, δ, or confidence.
    """
    if not 0.0 < confidence < 1.0:
        raise AuditError(f"confidence must be in (0, 1), got {confidence}")
    level = 1.0 - confidence
    if p_value_one_run(m, r, v, 0.0, delta) >= level:
        return 0.0
    low, high = 0.0, 1.0  # invariant: p(low) < level
    while p_value_one_run(m, r, v, high, delta) < level:
        low, high = high, 2.0 * high
        if high > EPS_SEARCH_MAX:
            return low
    while high - low > tolerance:
        mid = (low + high) / 2.0
        if p_value_one_run(m, r, v, mid, delta) < level:
            low = mid
        else:
            high = mid
    return low


@dataclass(frozen=True)
class OneRunOutcome:
    """The guesses behind an ε lower bound.

    Attributes:
        epsilon_lb: the bound (ε, at ``confidence``; Bonferroni over the grid).
        k_pos, k_neg: the guess counts that gave it.
        guesses, correct: r and v for that choice.
        canaries, included: m, and how many were actually included.
        delta: δ of the null hypothesis.
        confidence: e.g. 0.95.
        grid_size: number of (k_pos, k_neg) choices tried (error split evenly among them).
    """

    epsilon_lb: float
    k_pos: int
    k_neg: int
    guesses: int
    correct: int
    canaries: int
    included: int
    delta: float
    confidence: float
    grid_size: int


def one_run_epsilon(
    scores: npt.ArrayLike,
    included: npt.ArrayLike,
    delta: float,
    *,
    guess_grid: Sequence[tuple[int, int]] | None = None,
    confidence: float = 0.95,
) -> OneRunOutcome:
    """ε lower bound from canary scores (higher = "in") and the true inclusion coins.

    Args:
        scores: one score per canary, shape (m,).
        included: the coins, shape (m,), bool.
        delta: the δ of the training run's guarantee.
        guess_grid: (k_pos, k_neg) pairs to try; default one pair, (m//4, m//4). Trying g pairs
            spends (1 − confidence)/g on each, so the maximum stays a valid bound.
        confidence: confidence of the bound.

    Raises:
        AuditError: mismatched shapes, non-finite scores, or a guess count above m.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    inc = np.asarray(included, dtype=bool).reshape(-1)
    m = s.size
    if m == 0 or inc.size != m or not np.isfinite(s).all():
        raise AuditError("need one finite score and one inclusion coin per canary")
    grid = list(guess_grid) if guess_grid else [(m // 4, m // 4)]
    for k_pos, k_neg in grid:
        if k_pos < 0 or k_neg < 0 or k_pos + k_neg > m or k_pos + k_neg == 0:
            raise AuditError(f"guess counts (k_pos={k_pos}, k_neg={k_neg}) invalid for m={m}")
    # Ties broken by a fixed permutation that ignores the coins (stable argsort of the scores).
    order = np.argsort(-s, kind="stable")  # descending
    per_choice = 1.0 - (1.0 - confidence) / len(grid)
    best: OneRunOutcome | None = None
    for k_pos, k_neg in grid:
        top, bottom = order[:k_pos], order[m - k_neg :] if k_neg else order[:0]
        v = int(inc[top].sum()) + int((~inc[bottom]).sum())
        r = k_pos + k_neg
        eps = epsilon_lower_bound(m, r, v, delta, per_choice)
        outcome = OneRunOutcome(
            eps, k_pos, k_neg, r, v, m, int(inc.sum()), delta, confidence, len(grid)
        )
        if best is None or eps > best.epsilon_lb:
            best = outcome
    assert best is not None
    return best
