"""Acceptance and the kept model, end to end on the tiny base: a poisoning partner is contained, the
kept model is never worse on validation than the starting point, and with DP the choice is planned,
recorded before use and never past the budget."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from secure_pcft.collab.strategy import make_strategy
from secure_pcft.config import (
    RECOMMENDED_STRATEGY,
    DataConfig,
    OutputConfig,
    PrivacyConfig,
    RunConfig,
    SecurityConfig,
    TrainConfig,
)
from secure_pcft.model.loading import BaseModel
from secure_pcft.privacy.accounting import epsilon_spent
from secure_pcft.privacy.ledger import ledger_path, read_ledger
from secure_pcft.runtime.loopback import Simulation
from tests.conftest import tiny_federation

TRAIN = TrainConfig(batch_size=4, lr=2e-2, warmup_steps=4, local_steps=2, total_steps=10)


def run_cfg(
    tmp: Path, *, accept: bool = True, security: str = "off", **privacy: object
) -> RunConfig:
    return RunConfig(
        data=DataConfig(block_size=16),
        train=TRAIN,
        strategy=replace(
            RECOMMENDED_STRATEGY,
            accept=accept,
            options={**RECOMMENDED_STRATEGY.options, "reference_batches": 1},
        ),
        privacy=PrivacyConfig(**privacy),  # type: ignore[arg-type]
        security=SecurityConfig(mode=security),  # type: ignore[arg-type]
        output=OutputConfig(dir=str(tmp / "out")),
    )


SENT: list[int] = []  # one entry per poisoned adapter the attacker released


def _poison(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    SENT.append(1)
    return {k: 1e3 * v for k, v in state.items()}  # far outside anything a round can absorb


def run(cfg: RunConfig, base: BaseModel, attacker: int | None = None) -> Simulation:
    sim = Simulation(cfg, tiny_federation(num_peers=6), base)
    if attacker is not None:
        sim.peers[attacker].release_transform = _poison
    sim.warmup()
    sim.run_rounds(make_strategy(cfg.strategy))
    return sim


@pytest.mark.parametrize("security", ["off", "full"])
def test_a_poisoning_partner_is_never_adopted(
    tmp_path: Path, tiny_base: BaseModel, security: str
) -> None:
    attacker = 1  # same domain as peer 4: its honest signature gets it selected
    SENT.clear()
    sim = run(run_cfg(tmp_path, security=security), tiny_base, attacker)
    res = sim.result(make_strategy(sim.cfg.strategy), 0.0)
    sim.close()

    adopted_the_attacker = [
        (r.round, i)
        for r in res.rounds[1:]
        for i, row in enumerate(r.trust)
        if i != attacker and row[attacker] > 0
    ]
    assert adopted_the_attacker == []
    assert SENT  # it was offered: victims asked for the attacker's adapter and got it
    if security == "full":  # the ×1000 adapter passes no norm bound: every receiver rejects it
        assert sum(len(v) for v in res.rejections.values()) == len(SENT)


def test_without_acceptance_the_same_partner_poisons_its_victims(
    tmp_path: Path, tiny_base: BaseModel
) -> None:
    """The control: the paper's aggregation adopts the trust aggregate whatever it does."""
    attacker = 1
    sim = run(run_cfg(tmp_path, accept=False), tiny_base, attacker)
    res = sim.result(make_strategy(sim.cfg.strategy), 0.0)
    sim.close()

    poisoned = [
        (r.round, i)
        for r in res.rounds[1:]
        for i, row in enumerate(r.trust)
        if i != attacker and row[attacker] > 0
    ]
    assert poisoned  # someone averaged the ×1000 adapter in


def test_every_peer_keeps_a_model_at_least_as_good_as_its_start_on_validation(
    tmp_path: Path, tiny_base: BaseModel
) -> None:
    sim = run(run_cfg(tmp_path), tiny_base)
    res = sim.result(make_strategy(sim.cfg.strategy), 0.0)
    sim.close()

    assert len(res.kept) == 6
    for k in res.kept:
        assert k["val_loss"] <= k["start"]["val_loss"]
        assert k["start"]["origin"] in ("base", "warm-up")
        assert k["origin"] == k["start"]["origin"] or k["origin"].startswith("round ")
    summary = res.summary()
    assert summary["worst_kept_vs_start"] == max(
        k["test_ppl"] / k["start"]["test_ppl"] for k in res.kept
    )
    assert all(a in ("self", "trust") or a.startswith("nearest-") for a in summary["adopted"])
    assert sum(summary["adopted"].values()) == 6 * TRAIN.num_rounds
    assert all(len(r.extra["adopted"]) == 6 for r in res.rounds[1:])


def test_with_dp_an_uninformative_choice_spends_nothing(
    tmp_path: Path, tiny_base: BaseModel
) -> None:
    cfg = run_cfg(tmp_path, enabled=True, target_epsilon=8.0)
    sim = run(cfg, tiny_base)
    plans = [p.selection for p in sim.peers]
    sim.close()

    assert all(not p.accounted and "skipped" in p.reason for p in plans)
    for peer_id in sim.peer_ids:
        events = read_ledger(ledger_path(tmp_path / "out" / "ledgers", peer_id)).events
        assert not any(e.released == "selection-scores" for e in events)


def test_with_dp_an_accounted_choice_is_recorded_and_the_plan_holds(
    tmp_path: Path, tiny_base: BaseModel
) -> None:
    # σ given: the choice's σ is validation_noise_multiplier, 0.9 ≤ n/4 on 4-5 validation blocks
    cfg = run_cfg(
        tmp_path, enabled=True, noise_multiplier=3.0, validation_noise_multiplier=0.9, delta=1e-3
    )
    sim = run(cfg, tiny_base)
    plans = [p.selection for p in sim.peers]
    summaries = [p.privacy.summary() for p in sim.peers if p.privacy is not None]
    sim.close()

    assert all(p.accounted for p in plans)
    for peer_id, summary in zip(sim.peer_ids, summaries, strict=True):
        contents = read_ledger(ledger_path(tmp_path / "out" / "ledgers", peer_id))
        picks = [e for e in contents.events if e.released == "selection-scores"]
        plan = sim.peers[0].selection
        assert len(picks) == TRAIN.num_rounds
        assert all(e.steps <= plan.queries_per_round for e in picks)  # m − 1 at most
        eps = epsilon_spent(contents.events, contents.genesis.delta, contents.genesis.accountant)
        budget = contents.genesis.budget_epsilon  # σ given: the plan's ε, selection included
        assert budget is not None and eps <= budget * (1 + 1e-6)
        assert summary["epsilon_spent"] == pytest.approx(eps)


def test_a_choice_the_budget_cannot_pay_for_is_not_used_and_nothing_follows(
    tmp_path: Path, tiny_base: BaseModel
) -> None:
    # σ given: the choice's σ is validation_noise_multiplier (1.0: informative, and costly)
    cfg = run_cfg(
        tmp_path, enabled=True, noise_multiplier=2.0, budget_epsilon=3.0,
        validation_noise_multiplier=1.0, delta=1e-3,
    )  # fmt: skip
    sim = run(cfg, tiny_base)
    stops = [p.privacy.stopped_round for p in sim.peers if p.privacy is not None]
    sim.close()

    assert any(s is not None for s in stops)
    for peer_id, stop in zip(sim.peer_ids, stops, strict=True):
        contents = read_ledger(ledger_path(tmp_path / "out" / "ledgers", peer_id))
        eps = epsilon_spent(contents.events, contents.genesis.delta, contents.genesis.accountant)
        assert eps <= 3.0 * (1 + 1e-6)  # never past the budget
        if stop is not None:  # nothing released after the stop
            assert not [e for e in contents.events if e.round > stop and e.recipients]
