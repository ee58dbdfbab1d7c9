"""DP-SGD runs end to end: releases recorded before they leave, budgets stop sharing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

import secure_pcft.run as run_module
from secure_pcft.cli import main
from secure_pcft.collab.strategy import make_strategy
from secure_pcft.config import (
    DataConfig,
    PrivacyConfig,
    RunConfig,
    StrategyConfig,
    TrainConfig,
)
from secure_pcft.data.corpus import Federation
from secure_pcft.errors import ConfigError, DataError
from secure_pcft.model.loading import BaseModel
from secure_pcft.privacy.accounting import epsilon_spent
from secure_pcft.privacy.events import DpEvent
from secure_pcft.privacy.ledger import ledger_path, read_ledger
from secure_pcft.runtime.loopback import Simulation
from tests.conftest import quick_strategy

TRAIN = TrainConfig(
    batch_size=4, lr=5e-3, warmup_steps=2, local_steps=2, total_steps=8, eval_batches=2
)


def dp_cfg(tmp: Path, strategy: str, **privacy: object) -> RunConfig:
    return RunConfig(
        data=DataConfig(block_size=16),
        train=TRAIN,
        strategy=quick_strategy(strategy),
        privacy=PrivacyConfig(enabled=True, **privacy),  # type: ignore[arg-type]
        output=RunConfig().output.__class__(dir=str(tmp / "out")),
    )


def run(cfg: RunConfig, federation: Federation, base: BaseModel) -> Simulation:
    sim = Simulation(cfg, federation, base)
    sim.warmup()
    sim.run_rounds(make_strategy(cfg.strategy))
    return sim


@pytest.mark.parametrize("strategy", ["fedavg", "predictions", "validation"])
def test_every_release_is_in_the_ledger_before_it_leaves(
    tmp_path: Path, tiny_base: BaseModel, federation: Federation, strategy: str
) -> None:
    cfg = dp_cfg(tmp_path, strategy, noise_multiplier=1.0)  # budget: the plan
    sim = run(cfg, federation, tiny_base)
    res = sim.result(make_strategy(cfg.strategy), 0.0)
    sim.close()
    for p in sim.peers:
        contents = read_ledger(ledger_path(tmp_path / "out" / "ledgers", p.peer_id))
        sent = sim.meter.sent(sender=p.peer_id).messages
        released = [e for e in contents.events if e.released in ("adapter", "signature")]
        assert sent >= len(released) > 0
        # all DP-SGD steps taken before the last release are accounted
        assert sum(e.steps for e in contents.events if e.mechanism == "dp-sgd") == TRAIN.total_steps
        eps = epsilon_spent(
            list(contents.events), contents.genesis.delta, contents.genesis.accountant
        )
        assert res.extra["privacy"][p.peer_id]["epsilon_spent"] == pytest.approx(eps)
        if strategy == "validation":
            assert any(e.mechanism == "gaussian-validation" for e in contents.events)


def test_budget_stops_sharing_and_is_never_exceeded(
    tmp_path: Path, tiny_base: BaseModel, federation: Federation
) -> None:
    cfg = dp_cfg(tmp_path, "fedavg", noise_multiplier=0.8)
    # the first release (warm-up + one round) fits; the whole run does not
    first = TRAIN.warmup_steps + TRAIN.local_steps
    sim = Simulation(cfg, federation, tiny_base)
    trainer = sim.peers[0].privacy.trainer  # type: ignore[union-attr]
    q, delta = trainer.sample_rate, trainer.delta
    sim.close()
    eps_first = epsilon_spent([DpEvent("dp-sgd", 0.8, q, first, 1, "adapter")], delta)
    eps_all = epsilon_spent([DpEvent("dp-sgd", 0.8, q, TRAIN.total_steps, 1, "adapter")], delta)
    budget = (eps_first + eps_all) / 2
    cfg = dp_cfg(tmp_path / "b", "fedavg", noise_multiplier=0.8, budget_epsilon=budget)
    sim = run(cfg, federation, tiny_base)
    res = sim.result(make_strategy(cfg.strategy), 0.0)
    sim.close()
    for info in res.extra["privacy"].values():
        assert info["epsilon_spent"] <= budget
        assert info["stopped_sharing_round"] is not None
    # after stopping, peers send no adapters
    last = res.rounds[-1]
    assert sum(last.bytes_sent) < sum(res.rounds[1].bytes_sent)


def test_ledger_cli_verifies_and_detects_tampering(
    tmp_path: Path, tiny_base: BaseModel, federation: Federation, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = dp_cfg(tmp_path, "fedavg", noise_multiplier=1.0)
    run(cfg, federation, tiny_base).close()
    path = ledger_path(tmp_path / "out" / "ledgers", "peer-0")
    assert main(["ledger", str(path)]) == 0
    assert "chain verified" in capsys.readouterr().out
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace('"steps":', '"steps":1', 1)
    path.write_text("\n".join(lines) + "\n")
    assert main(["ledger", str(path)]) == 4
    assert "LedgerError" in capsys.readouterr().err


@pytest.mark.parametrize("relative", [False, True])
def test_validation_scores_over_budget_stop_sharing_instead_of_aborting(
    tmp_path: Path, tiny_base: BaseModel, federation: Federation, relative: bool
) -> None:
    # DP-SGD is cheap (σ=5) but one validation score (σ_val=0.2) alone is over the budget:
    # the peers must stop sharing at round 1, finish the run, and never exceed the budget.
    budget = 2.0
    cfg = dp_cfg(
        tmp_path,
        "validation",
        noise_multiplier=5.0,
        budget_epsilon=budget,
        validation_noise_multiplier=0.2,
    )
    opts = {**cfg.strategy.options, "relative": relative}
    cfg = replace(cfg, strategy=replace(cfg.strategy, options=opts))
    sim = run(cfg, federation, tiny_base)
    res = sim.result(make_strategy(cfg.strategy), 0.0)
    sim.close()
    assert len(res.rounds) == 1 + TRAIN.num_rounds
    for p in sim.peers:
        info = res.extra["privacy"][p.peer_id]
        assert info["stopped_sharing_round"] == 1
        assert info["epsilon_spent"] <= budget
        contents = read_ledger(ledger_path(tmp_path / "out" / "ledgers", p.peer_id))
        assert not any(e.mechanism == "gaussian-validation" for e in contents.events)
    # a stopped peer keeps its own adapter: its applied row is local from round 1 on
    for rec in res.rounds[1:]:
        for i, row in enumerate(rec.trust):
            assert row[i] == pytest.approx(1.0)
    assert sum(res.rounds[-1].bytes_sent) == 0


def test_a_strategy_outside_the_peers_privacy_plan_is_refused(
    tmp_path: Path, tiny_base: BaseModel, federation: Federation
) -> None:
    # Peers built for `local` have no validation scores reserved in their σ calibration: running
    # `validation` on them would spend unplanned ε (before the fix it ran and hit the budget).
    cfg = dp_cfg(tmp_path, "local", target_epsilon=3.0)
    sim = Simulation(cfg, federation, tiny_base)
    sim.warmup()
    with pytest.raises(ConfigError, match=r"plan reserved \(0, 1\)"):
        sim.run_rounds(make_strategy(quick_strategy("validation")))
    sim.run_rounds(make_strategy(StrategyConfig(name="fedavg")))  # same plan: fine
    sim.close()


def test_compare_strategies_warms_up_once_per_privacy_plan(
    tmp_path: Path,
    tiny_base: BaseModel,
    federation: Federation,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(run_module, "load_base", lambda _path, **_kw: tiny_base)
    monkeypatch.setattr(run_module, "load_federation", lambda _data: federation)
    monkeypatch.setattr(run_module, "resolve_base_path", lambda _model: tiny_base.path)
    cfg = dp_cfg(tmp_path, "local", target_epsilon=3.0, validation_noise_multiplier=8.0)
    names = ["local", "validation", "fedavg"]
    results = run_module.compare_strategies(cfg, [quick_strategy(n) for n in names])
    assert [r.strategy for r in results] == names
    sigma = {r.strategy: r.extra["privacy"]["peer-0"]["noise_multiplier"] for r in results}
    # validation's DP-SGD σ leaves room for its reserved scores; the others share one warm-up
    assert sigma["validation"] > sigma["local"] == sigma["fedavg"]
    val = results[1]
    for pid, info in val.extra["privacy"].items():
        assert info["stopped_sharing_round"] is None, pid
        assert info["epsilon_spent"] <= 3.0 + 1e-9
        events = read_ledger(Path(info["ledger"])).events
        assert sum(e.steps for e in events if e.mechanism == "gaussian-validation") == (
            len(federation.peers) * TRAIN.num_rounds
        )


def test_relative_validation_reserves_its_gaps_and_stays_in_budget(
    tmp_path: Path, tiny_base: BaseModel, federation: Federation
) -> None:
    cfg = dp_cfg(tmp_path, "validation", target_epsilon=3.0, validation_noise_multiplier=6.0)
    opts = {**cfg.strategy.options, "relative": True}
    cfg = replace(cfg, strategy=replace(cfg.strategy, options=opts, temperature=0.1))
    sim = run(cfg, federation, tiny_base)
    res = sim.result(make_strategy(cfg.strategy), 0.0)
    sim.close()
    n = len(federation.peers)
    for info in res.extra["privacy"].values():
        assert info["stopped_sharing_round"] is None
        assert info["epsilon_spent"] <= 3.0 + 1e-9
        events = read_ledger(Path(info["ledger"])).events
        # every other peer's adapter scored each round; the own adapter never is
        assert sum(e.steps for e in events if e.mechanism == "gaussian-validation") == (
            (n - 1) * TRAIN.num_rounds
        )
    assert res.strategy == "validation-relative-t0.1"


@pytest.fixture()
def no_base_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to find or build the base model fails the test."""

    def never(*_: object) -> object:
        raise AssertionError("nothing may load before the refusal")

    monkeypatch.setattr(run_module, "resolve_base_path", never)


@pytest.mark.usefixtures("no_base_load")
def test_a_dp_run_into_a_folder_with_earlier_ledgers_is_refused_before_loading(
    tmp_path: Path,
) -> None:
    # Before: the earlier ledgers blocked every release, the run became local-only, overwrote
    # results.json and exited 0.
    cfg = dp_cfg(tmp_path, "fedavg", noise_multiplier=1.0)
    earlier = Path(cfg.output.dir) / "ledgers" / "peer-0.ledger.jsonl"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("{}\n")
    with pytest.raises(ConfigError, match=r"holds an earlier run's ledgers"):
        run_module.execute_run(cfg)
    assert earlier.read_text() == "{}\n"  # untouched
    fresh = replace(cfg, output=replace(cfg.output, dir=str(tmp_path / "new")))
    with pytest.raises(AssertionError, match="nothing may load"):
        run_module.execute_run(fresh)  # a fresh folder passes the check (and then loads)


@pytest.mark.usefixtures("no_base_load")
def test_a_strategy_typo_or_missing_data_fails_before_the_base_loads(tmp_path: Path) -> None:
    cfg = dp_cfg(tmp_path, "fedavg", noise_multiplier=1.0)
    with pytest.raises(ConfigError, match="unknown strategy 'fedavgg'"):
        run_module.compare_strategies(cfg, [StrategyConfig(name="fedavgg")])
    files = replace(cfg.data, source="files", paths=(str(tmp_path / "missing.txt"),))
    with pytest.raises(DataError):
        run_module.execute_run(replace(cfg, data=files))
