"""The relative validation mechanism: clipped per-block loss gaps, noise σ·2c/n, k-fold events."""

from __future__ import annotations

import math

import pytest
import torch

from secure_pcft.collab.strategies.validation import ValidationTrust
from secure_pcft.collab.strategy import (
    TrustContext,
    make_strategy,
    planned_scoring_queries,
    strategy_from_label,
)
from secure_pcft.config import PrivacyConfig, StrategyConfig
from secure_pcft.errors import ConfigError, PrivacyError
from secure_pcft.privacy.validation_scores import noisy_validation_gaps

OWN = torch.tensor([5.0, 6.0, 7.0, 8.0])  # (n,) nats


def cfg(sigma: float = 1.0, clip: float = 0.5) -> PrivacyConfig:
    return PrivacyConfig(validation_noise_multiplier=sigma, validation_gap_clip=clip)


def test_known_answer_clipped_mean_plus_noise_of_std_sigma_2c_over_n() -> None:
    cand = {"a": OWN + torch.tensor([0.1, -0.2, 2.0, -3.0]), "b": OWN.clone()}
    g = torch.Generator().manual_seed(7)
    out = noisy_validation_gaps(cand, OWN, cfg(sigma=2.0), round=3, generator=g)
    z = torch.normal(0.0, 2.0 * 2 * 0.5 / 4, size=(2,), generator=torch.Generator().manual_seed(7),
                     dtype=torch.float64)  # fmt: skip
    clipped_a = (0.1 - 0.2 + 0.5 - 0.5) / 4  # the 2.0 and -3.0 gaps clip to ±0.5
    assert out.losses["a"] == pytest.approx(clipped_a + float(z[0]))
    assert out.losses["b"] == pytest.approx(max(-0.5, min(0.5, float(z[1]))))
    assert (out.event.mechanism, out.event.noise_multiplier, out.event.steps) == (
        "gaussian-validation", 2.0, 2,
    )  # fmt: skip
    assert out.event.sample_rate == 1.0 and out.event.round == 3


def test_one_changed_block_moves_a_gap_by_at_most_2c_over_n() -> None:
    # σ tiny: the output is the clipped mean; a neighbouring validation split (one block replaced,
    # arbitrarily) changes it by at most the sensitivity the noise is calibrated to.
    tiny = cfg(sigma=1e-12)
    cand = OWN + torch.tensor([0.3, -0.1, 0.4, 0.2])
    base = noisy_validation_gaps({0: cand}, OWN, tiny, round=1, generator=torch.Generator())
    for own_k, cand_k in [(0.0, 100.0), (100.0, 0.0), (math.nan, 1.0), (1.0, math.inf)]:
        own2, cand2 = OWN.clone(), cand.clone()
        own2[2], cand2[2] = own_k, cand_k
        moved = noisy_validation_gaps({0: cand2}, own2, tiny, round=1, generator=torch.Generator())
        assert abs(moved.losses[0] - base.losses[0]) <= 2 * 0.5 / 4 + 1e-9


def test_noise_std_is_sigma_times_2c_over_n() -> None:
    g = torch.Generator().manual_seed(0)
    draws = [
        noisy_validation_gaps({0: OWN}, OWN, cfg(sigma=0.5, clip=10.0), round=1, generator=g)
        .losses[0] for _ in range(4000)
    ]  # fmt: skip
    assert torch.tensor(draws).std().item() == pytest.approx(0.5 * 2 * 10.0 / 4, rel=0.05)


def test_bad_inputs_are_typed_errors() -> None:
    with pytest.raises(PrivacyError):
        noisy_validation_gaps({}, OWN, cfg(), round=1, generator=torch.Generator())
    with pytest.raises(PrivacyError):
        noisy_validation_gaps({0: OWN[:3]}, OWN, cfg(), round=1, generator=torch.Generator())
    with pytest.raises(ConfigError):
        noisy_validation_gaps({0: OWN}, OWN, cfg(), round=1)  # seeded mode needs a generator
    with pytest.raises(ConfigError, match="relative"):
        make_strategy(StrategyConfig(name="predictions", options={"relative": True}))


def test_relative_rule_scores_gaps_and_never_queries_its_own_adapter() -> None:
    asked: list[int] = []
    adapters = {i: {"w": torch.full((1,), float(i))} for i in range(3)}

    def gap(state: dict[str, torch.Tensor]) -> float:
        asked.append(int(state["w"].item()))
        return {1: 0.1, 2: 0.4}[int(state["w"].item())]

    strategy = ValidationTrust(
        StrategyConfig(name="validation", temperature=0.1, options={"relative": True})
    )
    row = strategy.row(TrustContext(0, ("a", "b", "c"), adapters=adapters, validation_gap=gap))
    expected = torch.softmax(torch.tensor([0.0, -1.0, -4.0], dtype=torch.float64), dim=0)
    assert torch.allclose(row, expected)
    assert sorted(asked) == [1, 2]  # the own adapter is not scored
    assert strategy_from_label("validation-relative-t0.1") == strategy.cfg
    assert strategy.label == "validation-relative-t0.1"


@pytest.mark.parametrize(
    ("relative", "secure", "top_k", "expected"),
    [(False, False, 3, 9), (True, False, 3, 8), (False, True, 3, 4), (True, True, 3, 3),
     (True, True, 0, 8)],
)  # fmt: skip
def test_planned_queries_per_round(relative: bool, secure: bool, top_k: int, expected: int) -> None:
    strategy = ValidationTrust(StrategyConfig(name="validation", options={"relative": relative}))
    assert planned_scoring_queries(strategy, 9, secure=secure, select_top_k=top_k) == expected
