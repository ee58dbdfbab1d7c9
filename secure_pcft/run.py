"""Library entry points behind ``secure-pcft run`` and ``secure-pcft demo``."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from secure_pcft.collab.results import RunResult
from secure_pcft.collab.simulation import ProgressFn, Simulation
from secure_pcft.collab.strategy import make_strategy
from secure_pcft.config import DataConfig, LoraSettings, RunConfig, StrategyConfig, TrainConfig
from secure_pcft.data.settings import load_federation
from secure_pcft.errors import ConfigError
from secure_pcft.model.loading import load_base, resolve_base_path
from secure_pcft.model.lora import save_peft_adapter

log = logging.getLogger(__name__)


def execute_run(cfg: RunConfig, progress: ProgressFn | None = None) -> RunResult:
    """Run one collaboration as configured and write ``results.json`` (+ adapters) to the output dir."""
    results = compare_strategies(cfg, [cfg.strategy], progress)
    return results[0]


def compare_strategies(
    cfg: RunConfig, strategies: Sequence[StrategyConfig], progress: ProgressFn | None = None
) -> list[RunResult]:
    """Run several strategies from one shared warm-up (identical peers, data and seeds).

    The warm-up and round 1's local steps do not depend on the strategy: they run once
    (:meth:`Simulation.branch_point`) and every strategy starts from that snapshot, with results
    identical to running it alone. Each strategy's results go to ``<output dir>/<label>/`` when
    more than one is compared, else to the output dir itself.
    """
    labels = [s.label for s in strategies]
    if len(set(labels)) != len(labels):
        raise ConfigError(
            f"strategies to compare must differ (their results share folders): {labels}"
        )
    start = time.perf_counter()
    base = load_base(resolve_base_path(cfg.model))
    federation = load_federation(cfg.data)
    sim = Simulation(cfg, federation, base)
    warm = sim.branch_point(progress)
    warmup_seconds = time.perf_counter() - start
    out_root = Path(cfg.output.dir)
    results = []
    for scfg in strategies:
        t0 = time.perf_counter()
        sim.restore(warm)
        sim.cfg = replace(cfg, strategy=scfg)
        out = out_root if len(strategies) == 1 else out_root / scfg.label
        if len(strategies) > 1:
            # each strategy is its own (hypothetical) run: its releases go to its own ledgers
            for p in sim.peers:
                if p.privacy is not None:
                    root = (
                        Path(cfg.privacy.ledger_dir) / scfg.label if cfg.privacy.ledger_dir else out
                    )
                    p.privacy.open_ledger(root / "ledgers" if not cfg.privacy.ledger_dir else root)
        strategy = make_strategy(scfg)
        sim.run_rounds(strategy, progress, first_trained=warm.first_round_trained)
        res = sim.result(strategy, warmup_seconds + time.perf_counter() - t0)
        res.write_json(out / "results.json")
        if cfg.output.save_adapters:
            for p in sim.peers:
                save_peft_adapter(p.model, out / "adapters" / p.peer_id)
        results.append(res)
    sim.close()
    return results


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
    StrategyConfig(name="predictions", calibrated=True),
)
