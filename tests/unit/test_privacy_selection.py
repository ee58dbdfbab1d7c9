"""The per-round choice among candidate aggregates: its plan, its accounting and its mechanism.

Known answers: the plan's σ gives the selection exactly its share of ε (checked against Opacus's
RDP accountant on the same events); the mechanism's event is m − 1 Gaussian queries at q = 1; the
noise std is σ·2c/n; with the noise it reports, the probability of adopting a maximally harmful
candidate over ``self`` matches Φ(−c/s).
"""

from __future__ import annotations

import math

import pytest
import torch
from opacus.accountants import RDPAccountant

from secure_pcft.config import PrivacyConfig
from secure_pcft.errors import PrivacyError
from secure_pcft.privacy.randomness import SeededSource
from secure_pcft.privacy.selection import (
    RELEASED,
    SELF,
    SelectionPlan,
    exact_choice,
    noisy_choice,
    plan_selection,
)

DELTA = 1e-4


def dp(**fields: object) -> PrivacyConfig:
    return PrivacyConfig(enabled=True, target_epsilon=8.0, **fields)  # type: ignore[arg-type]


def test_without_dp_the_choice_is_exact_and_costs_nothing() -> None:
    plan = plan_selection(PrivacyConfig(), candidates=3, rounds=9, val_blocks=6, delta=DELTA)
    losses = {
        SELF: torch.tensor([2.0, 2.0, 2.0]),
        "trust": torch.tensor([1.9, 1.8, 2.1]),
        "uniform": torch.tensor([1.7, 2.4, 2.2]),
    }

    choice = exact_choice(losses)

    assert not plan.accounted and plan.reserved() == [] and plan.queries_per_round == 0
    assert choice.chosen == "trust" and choice.event is None
    assert choice.gaps["uniform"] == pytest.approx(0.1)


def test_the_plan_gives_the_choice_exactly_its_share_of_the_target() -> None:
    cfg = dp(selection_epsilon_share=0.25, validation_gap_clip=0.5)
    plan = plan_selection(cfg, candidates=3, rounds=9, val_blocks=400, delta=DELTA)

    reference = RDPAccountant()  # independent: Opacus's accountant on the reserved events
    for event in plan.reserved():
        reference.step(noise_multiplier=event.noise_multiplier, sample_rate=1.0)
        for _ in range(event.steps - 1):
            reference.step(noise_multiplier=event.noise_multiplier, sample_rate=1.0)
    eps = reference.get_epsilon(delta=DELTA)

    assert plan.accounted and plan.queries_per_round == 2
    assert len(plan.reserved()) == 9 and all(e.released == RELEASED for e in plan.reserved())
    assert eps == pytest.approx(0.25 * 8.0, rel=0.02) and eps <= 0.25 * 8.0 * 1.0001
    assert plan.noise_std == pytest.approx(plan.noise_multiplier * 2 * 0.5 / 400)


def test_an_uninformative_choice_is_skipped_and_reserves_nothing() -> None:
    # 6 validation blocks (the n60 benchmark's): noise std far above c/2
    plan = plan_selection(dp(), candidates=3, rounds=9, val_blocks=6, delta=DELTA)

    assert not plan.accounted and plan.reserved() == []
    assert plan.noise_std > plan.gap_clip / 2
    assert "skipped" in plan.reason and "no ε spent" in plan.reason


@pytest.mark.parametrize("share", [0.0])
def test_a_zero_share_never_spends(share: float) -> None:
    plan = plan_selection(dp(selection_epsilon_share=share), candidates=3, rounds=9,
                          val_blocks=10_000, delta=DELTA)  # fmt: skip

    assert not plan.accounted and plan.reserved() == []


def _plan(sigma: float, n: int, c: float = 0.5) -> SelectionPlan:
    return SelectionPlan(3, 9, n, sigma, c, True, "test")


def test_the_mechanism_records_m_minus_1_gaussian_queries() -> None:
    losses = {SELF: torch.full((8,), 2.0), "trust": torch.full((8,), 1.5),
              "uniform": torch.full((8,), 2.5)}  # fmt: skip
    source = SeededSource(torch.Generator().manual_seed(0))

    choice = noisy_choice(losses, _plan(0.01, 8), source, round=4)

    assert choice.event is not None
    e = choice.event
    assert (e.mechanism, e.noise_multiplier, e.sample_rate, e.steps, e.round, e.released) == (
        "gaussian-validation", 0.01, 1.0, 2, 4, RELEASED,
    )  # fmt: skip
    assert choice.chosen == "trust"  # the noise (std 1.25e-3 nats) cannot hide a 0.5-nat gap
    assert choice.gaps["trust"] == pytest.approx(-0.5, abs=0.01)
    assert choice.gaps["uniform"] == pytest.approx(0.5, abs=0.01)  # clipped at c


def test_a_poisoned_candidate_loses_at_the_rate_the_noise_predicts() -> None:
    # A poisoned aggregate: every block's gap is far above c, so its clipped mean gap is c. It
    # wins over self (gap 0) only when the noise is below -c: probability Φ(-c/s).
    n, c, sigma = 12, 0.5, 3.0
    plan = _plan(sigma, n, c)
    losses = {SELF: torch.full((n,), 2.0), "trust": torch.full((n,), 9.0)}
    source = SeededSource(torch.Generator().manual_seed(1))
    trials = 4000

    wins = sum(noisy_choice(losses, plan, source, round=1).chosen == "trust" for _ in range(trials))

    expected = 0.5 * math.erfc((c / plan.noise_std) / math.sqrt(2))  # Φ(-c/s)
    assert plan.noise_std == pytest.approx(0.25)
    assert wins / trials == pytest.approx(expected, abs=4 * math.sqrt(expected / trials))


def test_the_mechanism_refuses_what_it_cannot_account() -> None:
    losses = {SELF: torch.ones(4), "trust": torch.ones(5)}
    source = SeededSource(torch.Generator().manual_seed(0))
    with pytest.raises(PrivacyError, match="own n blocks"):
        noisy_choice(losses, _plan(1.0, 4), source, round=1)
    with pytest.raises(PrivacyError, match="self"):
        noisy_choice({"trust": torch.ones(4)}, _plan(1.0, 4), source, round=1)
    skipped = SelectionPlan(3, 9, 4, 1.0, 0.5, False, "skipped")
    with pytest.raises(PrivacyError, match="no accounted"):
        noisy_choice({SELF: torch.ones(4)}, skipped, source, round=1)


def test_the_broadest_candidate_within_one_standard_error_is_adopted() -> None:
    """The one-standard-error rule: averaging is the regularisation, so among the candidates as
    good as the best within one standard error the broadest wins; a clearly worse broad one never."""
    g = torch.Generator().manual_seed(0)
    own = 2.0 + 0.5 * torch.rand(12, generator=g, dtype=torch.float64)
    jitter = 0.02 * torch.randn(12, generator=g, dtype=torch.float64)
    losses = {
        SELF: own,
        "nearest-1": own + 0.005 + jitter,  # as good as self within the noise of the blocks
        "nearest-2": own + 0.3,  # clearly worse (a foreign-language partner)
        "trust": own + 5.0,  # poisoned
    }
    widths = {SELF: 1.0, "nearest-1": 2.0, "nearest-2": 3.0, "trust": 2.9}

    assert exact_choice(losses).chosen == SELF  # without breadth: the best mean
    assert exact_choice(losses, widths).chosen == "nearest-1"
    noisy = noisy_choice(losses, _plan(1e-4, 12), SeededSource(torch.Generator()), round=1,
                         breadth=widths)  # fmt: skip
    assert noisy.chosen == SELF  # noise std 8e-6 nats: only self is within one std of itself
