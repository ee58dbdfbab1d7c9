"""Choosing a training recipe (learning rate, steps) on validation data, never on test splits.

A recipe that suits one base does not suit another: the small base's lr 3e-3 drives SmolLM2-135M
from a test perplexity of 188 to 779 in 40 warm-up steps (README, "Strategies on SmolLM2"). So the
learning rate and the number of local steps are chosen per base, by the same procedure for every
base, and the procedure is a command a site can run on its own data::

    secure-pcft tune CONFIG --lr 1e-4 3e-4 1e-3 3e-3 --steps 10 20 40

Every site trains alone (the ``local`` strategy) from the same fresh adapter with each learning
rate, and after each checkpoint of ``--steps`` scores its own validation split (exact mean loss,
nothing released). The chosen recipe is the (lr, steps) with the lowest mean validation
perplexity over the sites. Test splits are never read.

**What it costs under DP.** Every trial trains on the private training split, and the chosen
recipe shapes what the sites later release; on private data under DP the trials and the choice
would have to be paid for (e.g. by private hyperparameter selection, Papernot & Steinke, ICLR 2022,
whose bound still grows with the ε of one trial). This command does not spend a budget on it:

* ``--data private`` (default) runs only without DP (``[privacy] enabled = false``): for recipe
  choices on data a site may use without a guarantee (a non-DP deployment, or data set aside);
* ``--data public`` runs on the consortium's *public* reference set instead (its documents split
  into a training and a validation part, one pseudo-site): a post-processing of public data,
  0 ε, with or without DP — with DP on, the trials run DP-SGD at the run's own σ, so the chosen
  learning rate is the one that works under that noise.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from secure_pcft.config import OutputConfig, RunConfig, SecurityConfig, StrategyConfig
from secure_pcft.data.corpus import Federation, PeerCorpus
from secure_pcft.data.settings import load_federation
from secure_pcft.errors import ConfigError, DataError
from secure_pcft.fileio import write_json_atomic
from secure_pcft.model.loading import load_base, resolve_base_path
from secure_pcft.runtime.loopback import ProgressFn, Simulation
from secure_pcft.versions import library_versions

RecipeData = Literal["private", "public"]


@dataclass(frozen=True)
class Trial:
    """One (learning rate, steps) checkpoint: every site's validation perplexity."""

    lr: float
    steps: int
    val_ppl: dict[str, float]

    @property
    def mean_val_ppl(self) -> float:
        return statistics.fmean(self.val_ppl.values())


@dataclass(frozen=True)
class RecipeSearch:
    """The trials and the chosen recipe (lowest mean validation perplexity over the sites)."""

    trials: tuple[Trial, ...]
    data: RecipeData
    config_hash: str
    seconds: float

    @property
    def chosen(self) -> Trial:
        return min(self.trials, key=lambda t: (t.mean_val_ppl, t.steps, t.lr))

    def to_json(self) -> dict[str, Any]:
        chosen = self.chosen
        return {
            "chosen": {"lr": chosen.lr, "steps": chosen.steps,
                       "mean_val_ppl": chosen.mean_val_ppl},
            "data": self.data,
            "epsilon_cost": 0.0,
            "trials": [{**asdict(t), "mean_val_ppl": t.mean_val_ppl} for t in self.trials],
            "config_hash": self.config_hash,
            "seconds": self.seconds,
            "versions": library_versions(),
        }  # fmt: skip


def public_federation(federation: Federation, val_fraction: float = 0.25) -> Federation:
    """One pseudo-site holding the public reference set, split into training and validation
    documents (deterministic), for tuning at 0 ε.

    Raises:
        DataError: the reference set has fewer than 8 documents.
    """
    ref = list(federation.reference)
    if len(ref) < 8:
        raise DataError(f"public tuning needs >= 8 reference documents, the set has {len(ref)}")
    n_val = max(2, round(len(ref) * val_fraction))
    val = tuple(ref[:n_val])  # its test split is never read: the validation documents again
    site = PeerCorpus("public", tuple(ref[n_val:]), val, val)
    return Federation((site,), tuple(ref), (), f"public reference set ({len(ref)} docs)")


def search_recipe(
    cfg: RunConfig,
    lrs: Sequence[float],
    checkpoints: Sequence[int],
    *,
    data: RecipeData = "private",
    progress: ProgressFn | None = None,
) -> RecipeSearch:
    """Train every site alone with each learning rate; score validation at each checkpoint.

    Raises:
        ConfigError: no learning rate or checkpoint, a value out of range, or private data with
            DP on (see the module docstring).
    """
    if not lrs or not checkpoints:
        raise ConfigError("tune: give at least one --lr and one --steps")
    if any(not (0 < lr <= 1) or not math.isfinite(lr) for lr in lrs):
        raise ConfigError("tune: --lr values in (0, 1]")
    if any(s < 1 for s in checkpoints):
        raise ConfigError("tune: --steps values >= 1")
    if data == "private" and cfg.privacy.enabled:
        raise ConfigError(
            "tune --data private with [privacy] enabled: every trial would train on private data "
            "and the choice would shape what is released, which this command does not pay for; "
            "use --data public (0 ε) or tune without DP on data you may use for it"
        )
    start = time.perf_counter()
    federation = load_federation(cfg.data)
    if data == "public":
        federation = public_federation(federation)
    base = load_base(resolve_base_path(cfg.model), device=cfg.model.device)
    steps = sorted(set(checkpoints))
    trials: list[Trial] = []
    with tempfile.TemporaryDirectory(prefix="secure-pcft-tune-") as scratch:
        for i, lr in enumerate(lrs):
            trial_cfg = replace(
                cfg,
                train=replace(
                    cfg.train, lr=lr, warmup_steps=0, local_steps=steps[-1], total_steps=steps[-1]
                ),
                strategy=StrategyConfig(name="local"),
                output=OutputConfig(dir=str(Path(scratch) / f"lr-{i}"), save_adapters=False),
                privacy=replace(cfg.privacy, ledger_dir=""),
                security=SecurityConfig(),  # nothing is exchanged: sites train alone
            )
            trials += _one_learning_rate(trial_cfg, federation, base, lr, steps, progress)
    return RecipeSearch(tuple(trials), data, cfg.digest(), time.perf_counter() - start)


def _one_learning_rate(
    cfg: RunConfig,
    federation: Federation,
    base: Any,
    lr: float,
    steps: list[int],
    progress: ProgressFn | None,
) -> list[Trial]:
    sim = Simulation(cfg, federation, base)
    out: list[Trial] = []
    try:
        done = 0
        for target in steps:
            for p in sim.peers:
                p.train(target - done)
            done = target
            val = {p.peer_id: math.exp(float(p.val_losses(p.adapter()).mean())) for p in sim.peers}
            out.append(Trial(lr, target, val))
            if progress:
                progress(f"tune (lr {lr:g})", done, steps[-1])
    finally:
        sim.close()
    return out


def write_search(search: RecipeSearch, path: Path) -> Path:
    """Write the search's JSON (atomic)."""
    return write_json_atomic(path, search.to_json())
