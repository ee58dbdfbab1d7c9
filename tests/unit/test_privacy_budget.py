"""Budget guard: checks before a release, records durably, refuses and records nothing."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from secure_pcft.config import EPSILON_CEILING, LoraSettings, PrivacyConfig, TrainConfig
from secure_pcft.errors import (
    BudgetExhaustedError,
    BudgetInfeasibleError,
    ConfigError,
    LedgerError,
    PrivacyError,
)
from secure_pcft.model.lora import attach_lora
from secure_pcft.privacy import (
    BudgetGuard,
    DpEvent,
    DpTrainer,
    PrivacyLedger,
    budget_epsilon,
    calibrate_noise_multiplier,
    epsilon_spent,
    ledger_path,
    read_ledger,
)

DELTA = 1e-4
Q = 0.02


def sgd(steps: int, sigma: float = 1.0, rnd: int = 0) -> DpEvent:
    return DpEvent("dp-sgd", sigma, Q, steps, rnd, "adapter", ("peer-1",))


def guarded(tmp_path: Path, budget: float | None = 3.0) -> BudgetGuard:
    ledger = PrivacyLedger.open(
        ledger_path(tmp_path, "peer-0"),
        peer_id="peer-0",
        delta=DELTA,
        budget_epsilon=budget,
        accountant="rdp",
    )
    return BudgetGuard(ledger, budget, DELTA, "rdp")


def test_record_release_appends_and_returns_the_recomputed_epsilon(tmp_path: Path) -> None:
    guard = guarded(tmp_path)

    eps1 = guard.record_release([sgd(40)])
    eps2 = guard.record_release([sgd(20, rnd=1)])

    assert 0 < eps1 < eps2 <= 3.0
    assert eps2 == pytest.approx(epsilon_spent([sgd(60)], DELTA))
    assert guard.spent == pytest.approx(eps2)
    assert guard.remaining == pytest.approx(3.0 - eps2)
    assert [e.event.steps for e in read_ledger(guard.ledger.path).entries] == [40, 20]


def test_over_budget_release_is_refused_and_nothing_is_recorded(tmp_path: Path) -> None:
    guard = guarded(tmp_path, budget=2.0)
    guard.record_release([sgd(10)])
    on_disk = guard.ledger.path.read_bytes()
    spent = guard.spent

    with pytest.raises(BudgetExhaustedError, match="nothing was released"):
        guard.record_release([sgd(5000, sigma=0.7)])

    assert guard.ledger.path.read_bytes() == on_disk
    assert len(guard.ledger.entries) == 1
    assert guard.spent == spent


def test_check_records_nothing(tmp_path: Path) -> None:
    guard = guarded(tmp_path)

    eps = guard.check([sgd(40)])

    assert eps > 0
    assert guard.ledger.entries == ()
    assert guard.spent == 0.0


def test_calibrated_run_fits_exactly_and_one_more_step_is_refused(tmp_path: Path) -> None:
    sigma = calibrate_noise_multiplier(target_epsilon=3.0, delta=DELTA, sample_rate=Q, steps=100)
    guard = guarded(tmp_path, budget=3.0)

    for rnd, steps in enumerate([40, 20, 20, 20]):  # warm-up, then rounds: 100 steps in all
        guard.record_release([sgd(steps, sigma, rnd)])

    with pytest.raises(BudgetExhaustedError):
        guard.record_release([sgd(25, sigma, 4)])
    assert 3.0 - 0.01 <= guard.spent <= 3.0


def test_restart_never_forgets_spent_epsilon(tmp_path: Path) -> None:
    guard = guarded(tmp_path)
    guard.record_release([sgd(40)])
    spent = guard.spent
    guard.ledger.close()

    again = guarded(tmp_path)

    assert again.spent == spent


def test_guard_must_agree_with_the_ledger(tmp_path: Path) -> None:
    guard = guarded(tmp_path)

    for budget, delta, accountant in [
        (30.0, DELTA, "rdp"),
        (3.0, 1e-3, "rdp"),
        (3.0, DELTA, "prv"),
    ]:
        with pytest.raises(LedgerError, match="guard was given"):
            BudgetGuard(guard.ledger, budget, delta, accountant)


def test_no_budget_records_but_never_refuses(tmp_path: Path) -> None:
    guard = guarded(tmp_path, budget=None)

    eps = guard.record_release([sgd(100_000, sigma=0.5)])

    assert eps > 100
    assert guard.remaining == float("inf")


def test_preflight_refuses_a_budget_the_first_release_cannot_fit(tmp_path: Path) -> None:
    guard = guarded(tmp_path, budget=0.5)

    with pytest.raises(BudgetInfeasibleError, match="first release") as info:
        guard.preflight([sgd(40, sigma=0.8)])

    assert isinstance(info.value, ConfigError) and isinstance(info.value, PrivacyError)
    assert guard.preflight([sgd(1, sigma=5.0)]) < 0.5


def test_budget_resolution_from_config() -> None:
    assert budget_epsilon(PrivacyConfig(enabled=True, target_epsilon=4.0), 3.0) == 4.0
    assert (
        budget_epsilon(PrivacyConfig(enabled=True, target_epsilon=4.0, budget_epsilon=6.0), 3.0)
        == 6.0
    )
    # σ given and no budget: the plan's ε is the budget (a run never spends more than it planned)
    assert budget_epsilon(PrivacyConfig(enabled=True, noise_multiplier=1.0), 7.5) == 7.5


@pytest.mark.parametrize("planned", [math.inf, 4.0e6, EPSILON_CEILING * 1.01])
def test_a_plan_beyond_the_ceiling_is_refused(planned: float) -> None:
    cfg = PrivacyConfig(enabled=True, noise_multiplier=1e-3)  # ε ≈ 4·10⁶ for a short run

    with pytest.raises(BudgetInfeasibleError, match="ceiling"):
        budget_epsilon(cfg, planned)


@pytest.mark.parametrize(
    "fields",
    [
        {"noise_multiplier": 0.0},
        {"noise_multiplier": math.inf},
        {"noise_multiplier": math.nan},
        {"target_epsilon": math.inf},
        {"target_epsilon": EPSILON_CEILING * 2},
    ],
)
def test_values_that_switch_dp_off_are_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match=r"\[privacy\]"):
        PrivacyConfig(enabled=True, **fields)  # type: ignore[arg-type]


def test_training_release_records_the_steps_since_the_last_release(tmp_path: Path) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        base = GPT2LMHeadModel(
            GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2)
        )
    model = attach_lora(base, LoraSettings(dropout=0.0), peer_seed=0)
    data = torch.randint(0, 64, (100, 8), generator=torch.Generator().manual_seed(0))
    trainer = DpTrainer(
        model, data, TrainConfig(batch_size=4), PrivacyConfig(enabled=True, noise_multiplier=1.0),
        torch.Generator().manual_seed(0),
    )  # fmt: skip
    guard = guarded(tmp_path, budget=2.0)
    trainer.train(3)

    guard.record_training_release(trainer, round=0, recipients=("peer-1", "peer-2"))
    guard.record_training_release(trainer, round=0, released="signature", recipients=("peer-3",))
    trainer.train(2)
    refused_budget = guarded(tmp_path / "other", budget=0.01)
    with pytest.raises(BudgetExhaustedError):
        refused_budget.record_training_release(trainer, round=1)

    events = guard.ledger.events
    assert [(e.steps, e.released, e.recipients) for e in events] == [
        (3, "adapter", ("peer-1", "peer-2")),
        (0, "signature", ("peer-3",)),
    ]
    assert events[0].sample_rate == 4 / 100 and events[0].noise_multiplier == 1.0
    assert trainer.unreleased_steps == 2  # the refused release left the trainer as it was
