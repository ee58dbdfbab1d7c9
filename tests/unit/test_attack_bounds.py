"""What an ε means for an attacker: known answers for the TPR bounds and μ."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest

from secure_pcft.privacy.attack_bounds import (
    gaussian_mu,
    tpr_bound,
    tpr_bound_eps_delta,
    tpr_bound_gdp,
)
from secure_pcft.privacy.events import DpEvent


def test_the_eps_delta_region_at_known_points() -> None:
    # ε = 0: no test beats chance (TPR ≤ FPR + δ)
    assert tpr_bound_eps_delta(0.0, 0.0, 0.01) == pytest.approx(0.01)
    assert tpr_bound_eps_delta(1.0, 1e-5, 0.01) == pytest.approx(math.e * 0.01 + 1e-5)
    # at large FPR the second face binds: 1 − e^−ε (1 − δ − FPR)
    assert tpr_bound_eps_delta(1.0, 0.0, 0.9) == pytest.approx(1 - math.exp(-1) * 0.1)
    assert tpr_bound_eps_delta(math.inf, 0.0, 0.01) == 1.0


def test_mu_is_exact_without_subsampling_and_matches_the_closed_form() -> None:
    events = [DpEvent("dp-sgd", 2.0, 1.0, 20, 0, "adapter"),
              DpEvent("gaussian-validation", 4.0, 1.0, 3, 1, "selection-scores")]  # fmt: skip

    mu, exact = gaussian_mu(events)

    assert exact and mu == pytest.approx(math.sqrt(20 / 4 + 3 / 16))
    n = NormalDist()
    assert tpr_bound_gdp(mu, 0.01) == pytest.approx(n.cdf(n.inv_cdf(0.01) + mu))
    assert tpr_bound(events, "rdp", 0.01) == pytest.approx(tpr_bound_gdp(mu, 0.01))


def test_with_subsampling_the_bound_is_the_eps_delta_one_and_mu_only_approximate() -> None:
    events = [DpEvent("dp-sgd", 1.0, 0.05, 200, 0, "adapter")]

    mu, exact = gaussian_mu(events)
    bound = tpr_bound(events, "rdp", 0.01)

    assert not exact and mu == pytest.approx(0.05 * math.sqrt(200 * (math.e - 1)))
    assert 0.01 < bound < 1.0
    # the minimum over δ is at most the bound at any single δ of the grid
    from secure_pcft.privacy.accounting import epsilon_spent

    eps = epsilon_spent(events, 1e-5, "rdp")
    assert bound <= tpr_bound_eps_delta(eps, 1e-5, 0.01) + 1e-12
