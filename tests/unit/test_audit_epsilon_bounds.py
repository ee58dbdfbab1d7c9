"""The one-run ε lower bound (Steinke, Nasr & Jagielski 2023): the paper's p-value, known answers,
and soundness — on a mechanism whose true ε is known, ε_lb exceeds it at most 5% of the time."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from secure_pcft.audit.epsilon_bounds import (
    epsilon_lower_bound,
    one_run_epsilon,
    p_value_one_run,
)
from secure_pcft.errors import AuditError


def reference_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """Appendix D of the paper (``p_value_DP_audit``), written with SciPy."""
    q = 1 / (1 + math.exp(-eps))
    beta = stats.binom.sf(v - 1, r, q)
    alpha, total = 0.0, 0.0
    for i in range(1, v + 1):
        total += stats.binom.pmf(v - i, r, q)
        alpha = max(alpha, total / i)
    return min(beta + alpha * delta * 2 * m, 1.0)


@pytest.mark.parametrize(
    ("m", "r", "v", "eps", "delta"),
    [(1000, 100, 90, 1.0, 1e-5), (1000, 200, 150, 0.5, 1e-5), (100, 50, 40, 2.0, 0.0),
     (64, 32, 20, 0.3, 1e-3), (10, 10, 10, 5.0, 1e-2)],
)  # fmt: skip
def test_p_value_matches_the_papers_algorithm(
    m: int, r: int, v: int, eps: float, delta: float
) -> None:
    assert p_value_one_run(m, r, v, eps, delta) == pytest.approx(
        reference_p_value(m, r, v, eps, delta), rel=1e-9, abs=1e-15
    )


def test_all_guesses_right_without_delta_gives_the_closed_form_bound() -> None:
    # P[Binomial(r, q) >= r] = q^r = 0.05  ⇒  ε = logit(0.05^(1/r))
    r = 100
    q = 0.05 ** (1 / r)

    assert epsilon_lower_bound(1000, r, r, 0.0) == pytest.approx(math.log(q / (1 - q)), abs=1e-3)


def test_chance_level_guesses_give_zero() -> None:
    assert epsilon_lower_bound(1000, 100, 50, 1e-5) == 0.0
    assert epsilon_lower_bound(1000, 100, 30, 1e-5) == 0.0


def test_the_bound_grows_with_correct_guesses_and_shrinks_with_delta() -> None:
    bounds = [epsilon_lower_bound(1000, 200, v, 1e-5) for v in (120, 150, 180, 200)]

    assert bounds == sorted(bounds) and bounds[0] > 0
    assert epsilon_lower_bound(1000, 200, 180, 1e-3) < epsilon_lower_bound(1000, 200, 180, 0.0)


def _randomised_response(
    eps: float, m: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A mechanism that is exactly ε-DP per canary: each coin is reported through ε-randomised
    response, and the auditor's score is the report plus tie-breaking noise."""
    coins = rng.integers(0, 2, size=m).astype(bool)
    keep = rng.random(m) < math.exp(eps) / (1 + math.exp(eps))
    report = np.where(keep, coins, ~coins)
    return report + 0.01 * rng.random(m), coins


@pytest.mark.parametrize("eps", [0.5, 2.0])
def test_the_bound_is_sound_on_a_mechanism_with_known_epsilon(eps: float) -> None:
    rng = np.random.default_rng(0)
    trials, exceed, lbs = 200, 0, []

    for _ in range(trials):
        scores, coins = _randomised_response(eps, 400, rng)
        out = one_run_epsilon(scores, coins, delta=0.0, guess_grid=[(100, 100)])
        lbs.append(out.epsilon_lb)
        exceed += out.epsilon_lb > eps

    assert exceed / trials <= 0.05 + 0.03  # 95% confidence (+ Monte-Carlo slack)
    assert np.median(lbs) > 0.5 * eps  # and the bound has power on a leaky mechanism


def test_a_grid_of_guess_counts_pays_a_bonferroni_price() -> None:
    rng = np.random.default_rng(1)
    scores, coins = _randomised_response(3.0, 200, rng)

    single = one_run_epsilon(scores, coins, 1e-5, guess_grid=[(50, 50)])
    grid = one_run_epsilon(scores, coins, 1e-5, guess_grid=[(50, 50)] * 10)

    assert grid.epsilon_lb < single.epsilon_lb and grid.grid_size == 10
    assert (single.guesses, single.canaries) == (100, 200)
    assert single.correct == int(coins[np.argsort(-scores, kind="stable")[:50]].sum()) + int(
        (~coins[np.argsort(-scores, kind="stable")[150:]]).sum()
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda: p_value_one_run(10, 5, 6, 1.0, 0.0),
        lambda: p_value_one_run(10, 5, 3, -1.0, 0.0),
        lambda: epsilon_lower_bound(10, 5, 3, 0.0, confidence=1.0),
        lambda: one_run_epsilon([1.0, 2.0], [True], 0.0),
        lambda: one_run_epsilon([1.0, 2.0], [True, False], 0.0, guess_grid=[(2, 1)]),
    ],
)
def test_invalid_inputs_raise_audit_errors(call: object) -> None:
    with pytest.raises(AuditError):
        call()  # type: ignore[operator]
