"""Library entry points behind ``secure-pcft run`` and ``secure-pcft demo``."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from secure_pcft.collab.results import RunResult
from secure_pcft.config import (
    RECOMMENDED_STRATEGY,
    DataConfig,
    LoraSettings,
    RunConfig,
    StrategyConfig,
    TrainConfig,
)
from secure_pcft.data.corpus import Federation
from secure_pcft.data.manifest import write_manifests
from secure_pcft.data.settings import check_unit_data, load_federation
from secure_pcft.errors import ConfigError
from secure_pcft.fileio import write_json_atomic
from secure_pcft.model.export import base_fingerprint, export_adapter, lora_facts
from secure_pcft.model.loading import load_base, resolve_base_path
from secure_pcft.output_dir import refuse_spent_ledgers
from secure_pcft.privacy.budget_store import BudgetStore, data_fingerprint, default_store_dir
from secure_pcft.report.sources import RUN_RECORD_FILE, RUN_RECORD_FORMAT
from secure_pcft.runtime.assembly import RunPlan
from secure_pcft.runtime.loopback import ProgressFn, Simulation, Snapshot
from secure_pcft.versions import library_versions

log = logging.getLogger(__name__)


def execute_run(
    cfg: RunConfig, progress: ProgressFn | None = None, *, new_budget: str = ""
) -> RunResult:
    """Run one collaboration as configured and write ``results.json`` (+ adapters) to the output dir.

    With DP on, every peer draws from its site's budget store: earlier runs on the same training
    data count against the budget (privacy/budget_store.py). ``new_budget`` starts a fresh budget
    for every peer's data, recorded with that reason (results and the report show it).
    """
    results = compare_strategies(cfg, [cfg.strategy], progress, new_budget=new_budget)
    return results[0]


def compare_strategies(
    cfg: RunConfig,
    strategies: Sequence[StrategyConfig],
    progress: ProgressFn | None = None,
    *,
    new_budget: str = "",
) -> list[RunResult]:
    """Run several strategies from one shared warm-up (identical peers, data and seeds).

    The warm-up and round 1's local steps do not depend on the strategy: they run once
    (:meth:`Simulation.branch_point`) and every strategy starts from that snapshot, with results
    identical to running it alone. With DP on, the warm-up *does* depend on the strategy's privacy
    plan (σ is calibrated with a ``validation`` strategy's scores reserved), so strategies are
    grouped by plan and each group gets its own warm-up. Each strategy's results go to
    ``<output dir>/<label>/`` when more than one is compared, else to the output dir itself.
    Results come back in the order of ``strategies``.

    One strategy is a real run: with DP it draws from the site budget store (``new_budget``: a
    fresh budget, recorded with its reason). Several are an experiment comparing alternatives from
    one warm-up: each branch has its own fresh ledgers and no store.
    """
    # an unknown name or option, or a round it cannot run, fails now, not after the warm-up
    labels = [RunPlan.of(replace(cfg, strategy=scfg), 1).label for scfg in strategies]
    label_of = dict(zip(strategies, labels, strict=True))
    if len(set(labels)) != len(labels):
        raise ConfigError(
            f"strategies to compare must differ (their results share folders): {labels}"
        )
    refuse_spent_ledgers(cfg)
    start = time.perf_counter()
    federation = load_federation(cfg.data)  # missing data fails before the base loads
    check_unit_data(cfg.privacy.unit, federation)
    store = site_budget_store(cfg, federation, new_budget) if len(strategies) == 1 else None
    write_run_record(cfg, federation.peer_ids, labels, new_budget)
    write_manifests(federation, Path(cfg.output.dir) / "manifests")
    base = load_base(resolve_base_path(cfg.model), device=cfg.model.device)
    load_seconds = time.perf_counter() - start
    by_label: dict[str, RunResult] = {}
    for group in privacy_plan_groups(cfg, strategies, len(federation.peers)):
        t_group = time.perf_counter()
        sim = Simulation(replace(cfg, strategy=group[0]), federation, base, store)
        try:
            warm = sim.branch_point(progress)
            warmup_seconds = load_seconds + time.perf_counter() - t_group
            for scfg in group:
                by_label[label_of[scfg]] = _run_branch(
                    sim, cfg, scfg, label_of[scfg], warm, warmup_seconds,
                    several=len(strategies) > 1,
                    progress=progress, new_budget=new_budget,
                )  # fmt: skip
        finally:
            sim.close()
    return [by_label[label] for label in labels]


def site_budget_store(
    cfg: RunConfig, federation: Federation, new_budget: str
) -> BudgetStore | None:
    """The budget store of a DP run (None without DP); ``new_budget`` records a fresh budget for
    every peer's training data, with its reason, before anything is spent."""
    if not cfg.privacy.enabled:
        if new_budget:
            raise ConfigError("--new-budget: this run has no privacy budget ([privacy] enabled)")
        return None
    store = BudgetStore(default_store_dir(cfg.privacy.budget_store))
    for corpus in federation.peers if new_budget else ():
        store.new_budget(
            BudgetStore.key(corpus.peer_id, data_fingerprint(corpus.train)), new_budget
        )
    return store


def write_run_record(
    cfg: RunConfig, peer_ids: Sequence[str], labels: Sequence[str], new_budget: str = ""
) -> Path:
    """``<output>/run.json`` before anything trains: the configuration, the peers and the
    strategies, so that a run stopped early (Ctrl-C, a crash) stays reportable — its ledgers hold
    what it spent, this file what it was (``secure-pcft report`` reads both)."""
    record = {
        "format": RUN_RECORD_FORMAT,
        "config": cfg.to_dict(),
        "config_hash": cfg.digest(),
        "peer_ids": list(peer_ids),
        "strategy": labels[0] if len(labels) == 1 else ", ".join(labels),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": library_versions(),
        "new_budget": new_budget or None,
    }
    return write_json_atomic(Path(cfg.output.dir) / RUN_RECORD_FILE, record)


def privacy_plan_groups(
    cfg: RunConfig, strategies: Sequence[StrategyConfig], num_peers: int
) -> list[list[StrategyConfig]]:
    """``strategies`` grouped by the privacy plan their peers need (one group without DP)."""
    if not cfg.privacy.enabled:
        return [list(strategies)]
    groups: dict[tuple[int, int], list[StrategyConfig]] = {}
    for scfg in strategies:
        key = RunPlan.of(replace(cfg, strategy=scfg), num_peers).privacy_key
        groups.setdefault(key, []).append(scfg)
    return list(groups.values())


def _run_branch(
    sim: Simulation,
    cfg: RunConfig,
    scfg: StrategyConfig,
    label: str,
    warm: Snapshot,
    warmup_seconds: float,
    *,
    several: bool,
    progress: ProgressFn | None,
    new_budget: str = "",
) -> RunResult:
    """One strategy (``scfg``, named ``label``) from the snapshot ``warm``; writes its results
    (and adapters)."""
    t0 = time.perf_counter()
    out_root = Path(cfg.output.dir)
    out = out_root / label if several else out_root
    ledgers = None
    if several:
        # each strategy is its own (hypothetical) run: its releases go to its own ledgers
        own = Path(cfg.privacy.ledger_dir) / label if cfg.privacy.ledger_dir else None
        ledgers = own or out / "ledgers"
    strategy = sim.run_branch(warm, scfg, ledger_dir=ledgers, progress=progress)
    res = sim.result(strategy, warmup_seconds + time.perf_counter() - t0)
    if new_budget:
        res.extra["new_budget"] = new_budget  # the recorded act, for the compliance report
    res.write_json(out / "results.json")
    if cfg.output.save_adapters:
        export_adapters(sim, res, out / "adapters")
    return res


def export_adapters(sim: Simulation, res: RunResult, folder: Path) -> None:
    """One portable folder per peer: the model it keeps (``<peer>/``) and, beside it, its last
    round's adapter (``<peer>/last/``), with both figures on the card (model/export.py)."""
    cfg = sim.cfg
    base_record = base_fingerprint(sim.base.path)
    for i, p in enumerate(sim.peers):
        card = {
            "peer": p.peer_id,
            "strategy": res.strategy,
            "lora": {"mode": cfg.lora.mode, **lora_facts(p.model)},
            "rounds": len(res.rounds) - 1,
            "security": cfg.security.mode,
            "privacy": p.privacy.summary() if p.privacy is not None else None,
            "test_ppl": res.rounds[-1].test_ppl[i] if res.rounds[-1].test_ppl else None,
            "kept": res.kept[i] if res.kept else None,
        }
        last = p.adapter()
        export_adapter(p.model, folder / p.peer_id / "last", base_record, {**card, "role": "last"})
        try:
            p.set_adapter(p.kept.kept.state)
            export_adapter(p.model, folder / p.peer_id, base_record, {**card, "role": "kept"})
        finally:
            p.set_adapter(last)


def demo_config(output_dir: str = "runs/demo") -> RunConfig:
    """The demo: parliament speeches in German, Spanish and Dutch, 6 peers, on the small base.

    ``shared-init`` aggregation and the strategies benchmark's schedule (30 warm-up steps, then 3
    rounds of 10): the setting in which the benchmark measured collaboration paying off.
    """
    return RunConfig(
        lora=LoraSettings(mode="shared-init"),
        data=DataConfig(source="embedded"),
        train=TrainConfig(warmup_steps=30, local_steps=10, total_steps=60),
        output=replace(RunConfig().output, dir=output_dir),
    )


DEMO_STRATEGIES = (
    StrategyConfig(name="local"),
    StrategyConfig(name="fedavg"),
    StrategyConfig(name="oracle"),
    StrategyConfig(name="weights"),
    StrategyConfig(name="predictions"),
    StrategyConfig(name="validation"),
    StrategyConfig(name="predictions", options={"calibrated": True}),
    RECOMMENDED_STRATEGY,  # the toolkit's default collaboration (acceptance, kept model)
)
