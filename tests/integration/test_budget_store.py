"""One budget per site and dataset across runs: a new output folder, a restart or a new config on
the same data draws from the same budget; a fresh budget only by --new-budget, recorded."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from secure_pcft.config import (
    DataConfig,
    OutputConfig,
    PrivacyConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
)
from secure_pcft.data.settings import register_data_source
from secure_pcft.errors import BudgetExhaustedError, LedgerError
from secure_pcft.privacy.budget_store import BudgetStore, data_fingerprint
from secure_pcft.report import build_report
from secure_pcft.run import execute_run
from tests.conftest import tiny_federation

TRAIN = TrainConfig(batch_size=4, lr=5e-3, warmup_steps=2, local_steps=2, total_steps=6)


@pytest.fixture()
def cfg(tmp_path: Path, tiny_base_dir: Path) -> RunConfig:
    register_data_source("tiny-budget-test", lambda _: tiny_federation(), force=True)
    return RunConfig(
        model=replace(RunConfig().model, base=str(tiny_base_dir)),
        data=DataConfig(source="tiny-budget-test", block_size=16),
        train=TRAIN,
        strategy=StrategyConfig(name="fedavg"),
        privacy=PrivacyConfig(enabled=True, target_epsilon=4.0, budget_store=str(tmp_path / "s")),
        output=OutputConfig(dir=str(tmp_path / "run-1"), save_adapters=False),
    )


def _run(cfg: RunConfig, out: Path, **kwargs: str) -> dict[str, object]:
    res = execute_run(replace(cfg, output=replace(cfg.output, dir=str(out))), **kwargs)
    return res.extra["privacy"]  # type: ignore[return-value]


def test_a_new_folder_draws_from_the_same_budget(tmp_path: Path, cfg: RunConfig) -> None:
    first = _run(cfg, tmp_path / "run-1")  # σ calibrated for ε = 4; ≈ 4 spent
    second = _run(cfg, tmp_path / "run-2")  # a new folder: what is left of the same 4

    for peer, info in second.items():
        spent_before = first[peer]["epsilon_spent"]  # type: ignore[index]
        assert info["epsilon_prior"] == pytest.approx(spent_before)  # type: ignore[index]
        assert info["epsilon_total"] <= 4.0 * (1 + 1e-6)  # type: ignore[index]
        # the little that is left buys only a noisy run: σ calibrated with the first reserved
        assert info["noise_multiplier"] > 3 * first[peer]["noise_multiplier"]  # type: ignore[index]


def test_with_the_budget_spent_the_next_run_is_refused_and_says_how_to_renew(
    tmp_path: Path, cfg: RunConfig
) -> None:
    fixed = replace(cfg, privacy=replace(cfg.privacy, target_epsilon=None, noise_multiplier=1.0,
                                         budget_epsilon=30.0))  # fmt: skip
    first = _run(fixed, tmp_path / "run-1")
    spent = max(p["epsilon_spent"] for p in first.values())  # type: ignore[index]
    # a new config on the same data, with a budget just above what the first run spent: the same
    # budget, now too small for one more release
    other = replace(fixed, train=replace(TRAIN, lr=1e-2),
                    privacy=replace(fixed.privacy, budget_epsilon=spent * 1.05))  # fmt: skip
    with pytest.raises(BudgetExhaustedError, match="--new-budget"):
        _run(other, tmp_path / "run-2")


def test_a_larger_budget_leaves_room_and_the_second_run_pays_for_the_first(
    tmp_path: Path, cfg: RunConfig
) -> None:
    roomy = replace(cfg, privacy=replace(cfg.privacy, target_epsilon=2.0, budget_epsilon=6.0))
    first = _run(roomy, tmp_path / "run-1")
    second = _run(roomy, tmp_path / "run-2")

    for peer, info in second.items():
        prior = info["epsilon_prior"]  # type: ignore[index]
        assert prior == pytest.approx(first[peer]["epsilon_spent"])  # type: ignore[index]
        assert info["epsilon_total"] <= 6.0 * (1 + 1e-6)  # type: ignore[index]


def test_a_fresh_budget_is_a_recorded_act_the_report_shows(tmp_path: Path, cfg: RunConfig) -> None:
    _run(cfg, tmp_path / "run-1")

    second = _run(cfg, tmp_path / "run-2", new_budget="new consent round, records re-collected")

    assert all(p["epsilon_prior"] == 0.0 for p in second.values())  # type: ignore[union-attr]
    store = BudgetStore(tmp_path / "s")
    peer = tiny_federation().peers[0]
    key = BudgetStore.key(peer.peer_id, data_fingerprint(peer.train))
    assert store.renewals(key) == ["new consent round, records re-collected"]
    checks = {c.id: c for c in build_report(tmp_path / "run-2").checks}
    assert checks["budget.renewed"].status == "warn"
    assert "re-collected" in checks["budget.renewed"].detail


def test_a_missing_earlier_ledger_stops_the_next_run(tmp_path: Path, cfg: RunConfig) -> None:
    roomy = replace(cfg, privacy=replace(cfg.privacy, budget_epsilon=50.0))
    _run(roomy, tmp_path / "run-1")
    for f in (tmp_path / "run-1" / "ledgers").glob("*.ledger.jsonl"):
        f.unlink()  # the spend of run 1 can no longer be counted

    with pytest.raises(LedgerError, match="missing"):
        _run(roomy, tmp_path / "run-2")


def test_earlier_spend_in_another_privacy_unit_is_refused_not_added(
    tmp_path: Path, cfg: RunConfig
) -> None:
    roomy = replace(cfg, privacy=replace(cfg.privacy, budget_epsilon=50.0))
    _run(roomy, tmp_path / "run-1")  # ε per block
    per_document = replace(roomy, privacy=replace(roomy.privacy, unit="document"))

    with pytest.raises(LedgerError, match="accounted ε per block, this run per document"):
        _run(per_document, tmp_path / "run-2")
    # a reviewer's fresh budget (recorded, reported) is the way out
    _run(per_document, tmp_path / "run-3", new_budget="document-level review 2026-12")
