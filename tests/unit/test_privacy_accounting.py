"""ε from events through Opacus's accountants: known answers, grouping, calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
from opacus.accountants import GaussianAccountant, PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from scipy import optimize, stats

from secure_pcft.errors import BudgetInfeasibleError, PrivacyError, RegistryError
from secure_pcft.privacy import (
    DpEvent,
    calibrate_noise_multiplier,
    epsilon_spent,
    history_from_events,
    register_accountant,
)

DELTA = 1e-5


def sgd(sigma: float, q: float, steps: int, rnd: int = 0) -> DpEvent:
    return DpEvent("dp-sgd", sigma, q, steps, rnd, "adapter", ("p1",))


def stepped(acc: RDPAccountant | PRVAccountant, sigma: float, q: float, steps: int) -> None:
    for _ in range(steps):
        acc.step(noise_multiplier=sigma, sample_rate=q)


@pytest.mark.parametrize(
    ("sigma", "q", "steps"), [(1.1, 0.01, 400), (0.8, 0.05, 120), (2.0, 1.0, 10)]
)
def test_rdp_matches_opacus_accountant_stepped_one_step_at_a_time(
    sigma: float, q: float, steps: int
) -> None:
    reference = RDPAccountant()
    stepped(reference, sigma, q, steps)

    eps = epsilon_spent([sgd(sigma, q, steps)], DELTA, "rdp")

    assert eps == pytest.approx(reference.get_epsilon(delta=DELTA), rel=1e-12)


def test_rdp_heterogeneous_history_matches_opacus() -> None:
    reference = RDPAccountant()
    stepped(reference, 1.0, 0.02, 60)
    stepped(reference, 3.0, 1.0, 4)  # e.g. validation scoring of 4 candidates
    stepped(reference, 1.0, 0.02, 40)
    events = [
        sgd(1.0, 0.02, 60),
        DpEvent("gaussian-validation", 3.0, 1.0, 4, 1, "validation-scores"),
        sgd(1.0, 0.02, 40, 1),
    ]

    assert epsilon_spent(events, DELTA, "rdp") == pytest.approx(
        reference.get_epsilon(delta=DELTA), rel=1e-12
    )


def test_rdp_pure_gaussian_closed_form() -> None:
    # q = 1: RDP(α) = steps·α/(2σ²) exactly; Opacus's conversion (Balle et al. 2020) written out.
    sigma, steps = 4.0, 9
    orders = np.array([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)), dtype=float)
    rdp = steps * orders / (2 * sigma**2)
    eps = rdp - (np.log(DELTA) + np.log(orders)) / (orders - 1) + np.log((orders - 1) / orders)

    assert epsilon_spent([sgd(sigma, 1.0, steps)], DELTA, "rdp") == pytest.approx(
        float(eps.min()), rel=1e-9
    )


def test_prv_matches_opacus_and_is_tighter_than_rdp() -> None:
    reference = PRVAccountant()
    stepped(reference, 1.0, 0.01, 300)

    eps = epsilon_spent([sgd(1.0, 0.01, 300)], DELTA, "prv")

    assert eps == pytest.approx(reference.get_epsilon(delta=DELTA), rel=1e-9)
    assert eps < epsilon_spent([sgd(1.0, 0.01, 300)], DELTA, "rdp")


def test_gdp_single_mechanism_matches_opacus() -> None:
    with pytest.warns(UserWarning):
        reference = GaussianAccountant()
    for _ in range(200):
        reference.step(noise_multiplier=1.2, sample_rate=0.02)

    assert epsilon_spent([sgd(1.2, 0.02, 200)], DELTA, "gdp") == pytest.approx(
        reference.get_epsilon(delta=DELTA), rel=1e-9
    )


def test_gdp_pure_gaussian_is_exact() -> None:
    # k Gaussian queries at σ are exactly μ-GDP with μ = sqrt(k)/σ (Dong, Roth & Su 2019).
    sigma, k = 2.0, 4
    mu = math.sqrt(k) / sigma

    def delta_of(eps: float) -> float:
        return float(
            stats.norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * stats.norm.cdf(-eps / mu - mu / 2)
        )

    expected = optimize.brentq(lambda e: delta_of(e) - DELTA, 0.0, 100.0)
    event = DpEvent("gaussian-validation", sigma, 1.0, k, 0, "validation-scores")

    assert epsilon_spent([event], DELTA, "gdp") == pytest.approx(expected, rel=1e-6)


def test_gdp_composes_a_mixed_history_instead_of_keeping_the_last_entry() -> None:
    training = sgd(1.0, 0.02, 200)
    validation = DpEvent("gaussian-validation", 3.0, 1.0, 4, 1, "validation-scores")

    both = epsilon_spent([training, validation], DELTA, "gdp")

    assert both > epsilon_spent([training], DELTA, "gdp")
    assert both > epsilon_spent([validation], DELTA, "gdp")


@pytest.mark.parametrize("accountant", ["rdp", "prv", "gdp"])
def test_rounds_recorded_in_chunks_cost_the_same_as_one_run(accountant: str) -> None:
    chunks = [sgd(1.0, 0.01, 40)] + [sgd(1.0, 0.01, 20, r) for r in range(1, 5)]

    assert epsilon_spent(chunks, DELTA, accountant) == pytest.approx(
        epsilon_spent([sgd(1.0, 0.01, 120)], DELTA, accountant), rel=1e-12
    )


def test_history_groups_by_mechanism_parameters_and_drops_zero_step_events() -> None:
    events = [sgd(1.0, 0.01, 5), sgd(2.0, 1.0, 3), sgd(1.0, 0.01, 0), sgd(1.0, 0.01, 7)]

    assert history_from_events(events) == [(1.0, 0.01, 12), (2.0, 1.0, 3)]


def test_edge_cases_no_events_zero_noise_bad_arguments() -> None:
    assert epsilon_spent([], DELTA) == 0.0
    assert epsilon_spent([sgd(1.0, 0.01, 0)], DELTA) == 0.0
    assert epsilon_spent([sgd(0.0, 0.01, 1)], DELTA) == math.inf
    with pytest.raises(PrivacyError, match="accountant"):
        epsilon_spent([sgd(1.0, 0.01, 1)], DELTA, "moments")
    with pytest.raises(PrivacyError, match="delta"):
        epsilon_spent([sgd(1.0, 0.01, 1)], 1.5)


def test_registry_refuses_silent_overwrite() -> None:
    with pytest.raises(RegistryError, match="already registered"):
        register_accountant("rdp", lambda history, delta: 0.0)
    with pytest.raises(RegistryError, match="what a config can name"):  # one rule, every registry
        register_accountant("My Accountant", lambda history, delta: 0.0)


def test_calibration_is_opacus_get_noise_multiplier() -> None:
    q, steps, target = 8 / 400, 120, 4.0

    sigma = calibrate_noise_multiplier(
        target_epsilon=target, delta=DELTA, sample_rate=q, steps=steps
    )

    assert sigma == get_noise_multiplier(
        target_epsilon=target, target_delta=DELTA, sample_rate=q, steps=steps, accountant="rdp"
    )
    assert target - 0.01 <= epsilon_spent([sgd(sigma, q, steps)], DELTA, "rdp") <= target


@pytest.mark.parametrize("accountant", ["prv", "gdp"])
def test_calibration_hits_the_target_with_other_accountants(accountant: str) -> None:
    sigma = calibrate_noise_multiplier(
        target_epsilon=2.0, delta=DELTA, sample_rate=0.02, steps=120, accountant=accountant
    )

    spent = epsilon_spent([sgd(sigma, 0.02, 120)], DELTA, accountant)
    assert 2.0 - 0.01 <= spent <= 2.0


def test_calibration_leaves_room_for_reserved_validation_events() -> None:
    q, steps, target = 8 / 400, 120, 4.0
    reserved = [
        DpEvent("gaussian-validation", 8.0, 1.0, 3, r, "validation-scores") for r in range(2)
    ]

    plain = calibrate_noise_multiplier(
        target_epsilon=target, delta=DELTA, sample_rate=q, steps=steps
    )
    roomy = calibrate_noise_multiplier(
        target_epsilon=target, delta=DELTA, sample_rate=q, steps=steps, reserved=reserved
    )

    assert roomy > plain
    total = epsilon_spent([sgd(roomy, q, steps), *reserved], DELTA)
    assert target - 0.01 <= total <= target


def test_calibration_refuses_an_unreachable_budget() -> None:
    # RDP cannot certify ε below ≈0.1 at δ=1e-5 whatever σ: the σ needed is "infinite".
    with pytest.raises(BudgetInfeasibleError, match="unreachable"):
        calibrate_noise_multiplier(target_epsilon=0.05, delta=DELTA, sample_rate=0.01, steps=100)
    heavy = [DpEvent("gaussian-validation", 0.5, 1.0, 10, 0, "validation-scores")]
    with pytest.raises(BudgetInfeasibleError):
        calibrate_noise_multiplier(
            target_epsilon=1.0, delta=DELTA, sample_rate=0.01, steps=100, reserved=heavy
        )


def test_a_negative_rdp_conversion_is_reported_as_zero_not_an_error() -> None:
    # Opacus's RDP → (ε, δ) conversion goes below 0 for a very private history at a large δ
    # (seen as a PrivacyError while calibrating σ for a small target with δ = 1/(10·n)).
    acc = RDPAccountant()
    acc.history = [(1000.0, 0.17, 4)]
    assert acc.get_epsilon(delta=1e-2) < 0
    assert epsilon_spent([DpEvent("dp-sgd", 1000.0, 0.17, 4, 0, "adapter")], 1e-2) == 0.0
