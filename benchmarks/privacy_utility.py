"""Benchmark: privacy–utility of the trust strategies under DP-SGD, per data regime, mode and security.

Setting ``leipzig-specific`` (9 peers, de/fr/it). A *cell* is (regime, aggregation mode, security):
``n60`` = 60 training sentences per peer (δ = 1e-3), ``n500`` = 500 (δ = 1e-4); ``paper`` /
``shared-init`` / ``frozen-a``; ``[security] mode`` ``off`` (plain messages) or ``full`` (sealed
envelopes, CKKS discovery, top-k selection, mutual consent). For every finite ε each peer trains with
DP-SGD whose σ is calibrated up front for the *whole planned run*, and the same ε is the peer's hard
budget; ε = ∞ is plain training. ``local`` at a finite ε is the DP-local baseline (same DP-SGD, nothing
shared).

Strategies are given by label (``collab.strategy.strategy_label``: ``predictions-calibrated-t10-top3``,
``validation-relative-t0.3``, ...) and grouped by *privacy plan*: strategies without private scoring
branch off one warm-up (and round 1's local steps) per (cell, ε, seed); a ``validation`` variant has its
own, because its planned scores (``TrustStrategy.private_scores``) are reserved when σ is calibrated:
its accounted mechanism gets σ_val such that those scores alone cost ``--validation-share`` of ε, and
DP-SGD's σ is calibrated with them reserved. Each strategy writes to fresh ledgers.

Per strategy and ε: mean test perplexity over peers (then mean ± std over seeds), mean validation
perplexity (for choosing recipes — the test split chooses nothing), ε spent per peer from the ledgers,
the ε of the final model were it published, whether any peer stopped sharing, σ, the last round's trust
matrix. Results go to ``results/privacy_utility.json`` under ``"leipzig-specific/<regime>/<mode>/<security>"``
(``@<tag>`` for another recipe of a cell, ``--tag``); ``--merge`` adds cells to an existing file.
Separately: the DP-SGD step time over the plain step time on the same model and batch.

    python benchmarks/privacy_utility.py --quick                    # 1 seed, short schedule
    python benchmarks/privacy_utility.py --security off full --batch-size 64 --lr 1e-2 \
        --warmup-steps 8 --local-steps 4 --total-steps 20 --epsilons 8   # README's n60 DP recipe

Partial results are written after every finished job, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, RESULTS, cpu_model, machine, mean_std, train_schedule, write_json
from dp_step_time import timed

from secure_pcft.collab.peer import Peer
from secure_pcft.collab.strategy import run_scoring_queries, strategy_from_label
from secure_pcft.config import (
    DataConfig,
    LoraSettings,
    ModelConfig,
    OutputConfig,
    PrivacyConfig,
    RunConfig,
    SecurityConfig,
    TrainConfig,
)
from secure_pcft.data.blocks import encode_blocks
from secure_pcft.data.corpus import Federation
from secure_pcft.data.settings import load_federation
from secure_pcft.model.loading import BaseModel, load_base, resolve_base_path
from secure_pcft.model.lora import attach_lora
from secure_pcft.privacy import DpTrainer
from secure_pcft.privacy.accounting import calibrate_noise_multiplier, epsilon_spent
from secure_pcft.runtime.loopback import Simulation
from secure_pcft.third_party import quiet_third_party
from secure_pcft.train.local import LocalTrainer

SETTING: Final = "leipzig-specific"
EPSILONS = ("inf", "8", "3", "1")
SIX = ("local", "fedavg", "oracle", "weights", "predictions", "validation")
DEFAULT_STRATEGIES = (*SIX, "predictions-calibrated")
DELTA = 1e-3  # n60: fixed for every peer and ε; < 1/n_train (n_train ≤ 61 blocks)
VALIDATION_SHARE = 0.25
MODES = ("paper", "shared-init", "frozen-a")
SECURITY = ("off", "full")


@dataclass(frozen=True)
class Regime:
    """How much private data a peer holds, and the DP parameters that go with it.

    Attributes:
        name: the regime's key part (``n60`` = 60 training sentences per peer).
        docs_per_peer: training sentences per peer.
        delta: δ of every peer (< 1/n_train blocks; ≈ 1/(10·n) for n500).
        batch_size: expected Poisson batch (blocks).
    """

    name: str
    docs_per_peer: int
    delta: float
    batch_size: int = 8


REGIMES: dict[str, Regime] = {
    "n60": Regime("n60", 60, DELTA),
    "n500": Regime("n500", 500, 1e-4),
}


@dataclass(frozen=True)
class Cell:
    """One table of the result: a data regime, an aggregation mode and a security mode."""

    regime: Regime
    mode: str
    security: str
    tag: str = ""  # another recipe of the same cell (e.g. a DP-local lr sweep): "...@tag"

    @property
    def key(self) -> str:
        key = f"{SETTING}/{self.regime.name}/{self.mode}/{self.security}"
        return f"{key}@{self.tag}" if self.tag else key


def validation_sigma(eps: float, delta: float, queries: int, share: float) -> float:
    """σ of the validation mechanism such that its ``queries`` planned releases (Gaussian, q = 1)
    alone cost ``share``·ε at ``delta`` (RDP)."""
    return calibrate_noise_multiplier(
        target_epsilon=share * eps, delta=delta, sample_rate=1.0, steps=queries
    )


def privacy_for(
    eps: str, *, delta: float, scoring_queries: int, train: TrainConfig, share: float,
    ledger_dir: Path,
) -> PrivacyConfig:  # fmt: skip
    """The PrivacyConfig of one ε cell (``"inf"`` = DP off).

    ``scoring_queries`` = accounted validation scores per peer per round of the strategy the
    peers are planned for (0 for strategies without private scoring: σ_val is then unused).
    """
    if eps == "inf":
        return PrivacyConfig(enabled=False)
    target = float(eps)
    sigma_val = PrivacyConfig().validation_noise_multiplier
    if scoring_queries:
        queries = scoring_queries * train.num_rounds
        sigma_val = validation_sigma(target, delta, queries, share)
    return PrivacyConfig(
        enabled=True,
        target_epsilon=target,
        delta=delta,
        validation_noise_multiplier=sigma_val,
        ledger_dir=str(ledger_dir),
    )


def _peer_record(p: Peer) -> dict[str, Any]:
    """ε of one peer from its ledger: spent (released), split by mechanism, and of its final model."""
    if p.privacy is None:  # ε = ∞: no DP, no ledger (None keeps the JSON standard)
        return {"epsilon_spent": None, "epsilon_model": None, "noise_multiplier": None}
    pv = p.privacy
    events = list(pv.guard.ledger.events)
    delta, acc = pv.trainer.delta, pv.privacy_cfg.accountant
    pending = pv.trainer.pending_event(round=pv.round, released="final-model")
    return {
        "epsilon_spent": epsilon_spent(events, delta, acc),
        "epsilon_dpsgd_alone": epsilon_spent(
            [e for e in events if e.mechanism == "dp-sgd"], delta, acc
        ),
        "epsilon_validation_alone": epsilon_spent(
            [e for e in events if e.mechanism == "gaussian-validation"], delta, acc
        ),
        # what publishing the final adapter would cost: every recorded release + unreleased steps
        "epsilon_model": epsilon_spent([*events, pending], delta, acc),
        "noise_multiplier": pv.trainer.noise_multiplier,
        "validation_noise_multiplier": pv.privacy_cfg.validation_noise_multiplier,
        "scoring_queries_per_round": pv.scoring_queries,
        "sample_rate": pv.trainer.sample_rate,
        "delta": delta,
        "budget_epsilon": pv.budget,
        "stopped_sharing_round": pv.stopped_round,
        "releases": len(events),
    }


def run_cell(
    cfg: RunConfig,
    federation: Federation,
    base: BaseModel,
    labels: Sequence[str],
    ledger_root: Path,
) -> dict[str, dict[str, Any]]:
    """Warm up once with ``cfg`` (and round 1's local steps), then run each strategy of ``labels``
    from that snapshot (:meth:`Simulation.branch_point`).

    Each strategy's releases go to fresh ledgers under ``ledger_root/<label>``. ``cfg.strategy``
    must be the strategy the peers' privacy is planned for; a label with another plan is refused
    (:meth:`Simulation.check_privacy_plan`). Returns, per label, the test perplexity (mean over
    peers), the applied trust matrices and each peer's ε record.
    """
    sim = Simulation(cfg, federation, base)
    try:
        warm = sim.branch_point()
        warm_ppl = statistics.fmean(warm.record.test_ppl)
        out: dict[str, dict[str, Any]] = {}
        for label in labels:
            t0 = time.perf_counter()
            sim.run_branch(warm, strategy_from_label(label), ledger_dir=ledger_root / label,
                           evaluate_every_round=False)  # fmt: skip
            final = sim.records[-1]
            out[label] = {
                "test_ppl": statistics.fmean(final.test_ppl),
                # for choosing hyperparameters (never the test split): mean over peers
                "val_ppl": statistics.fmean(p.evaluate("val").perplexity for p in sim.peers),
                "warmup_test_ppl": warm_ppl,
                "trust": [r.trust for r in sim.records[1:]],
                "bytes": sum(sum(r.bytes_sent) for r in sim.records),
                "seconds": time.perf_counter() - t0,
                "peers": {p.peer_id: _peer_record(p) for p in sim.peers},
            }
        return out
    finally:
        sim.close()


def cell_config(
    base_cfg: RunConfig, eps: str, strategy: str, *, ledger_dir: Path, delta: float, share: float,
    num_peers: int,
) -> RunConfig:  # fmt: skip
    """``base_cfg`` with the strategy the peers' privacy is planned for and the ε cell's privacy."""
    planned = replace(base_cfg, strategy=strategy_from_label(strategy))
    privacy = privacy_for(
        eps, delta=delta, scoring_queries=run_scoring_queries(planned, num_peers),
        train=base_cfg.train, share=share, ledger_dir=ledger_dir,
    )  # fmt: skip
    return replace(planned, privacy=privacy)


def plan_groups(
    base_cfg: RunConfig, labels: Sequence[str], num_peers: int
) -> list[tuple[str, ...]]:
    """``labels`` grouped by privacy plan (one warm-up each; the long group first)."""
    groups: dict[int, list[str]] = {}
    for label in labels:
        cfg = replace(base_cfg, strategy=strategy_from_label(label))
        groups.setdefault(run_scoring_queries(cfg, num_peers), []).append(label)
    return sorted((tuple(g) for g in groups.values()), key=len, reverse=True)


def run_seed(
    base_cfg: RunConfig,
    federation: Federation,
    base: BaseModel,
    epsilons: Sequence[str],
    ledger_root: Path,
    *,
    labels: Sequence[str] = SIX,
    delta: float = DELTA,
    share: float = VALIDATION_SHARE,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Every ε of ``epsilons`` and every strategy of ``labels`` for one seed, serially."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    n = len(federation.peers)
    for eps in epsilons:
        out[eps] = {}
        for group in plan_groups(base_cfg, labels, n):
            ledgers = ledger_root / f"eps-{eps}" / group[0]
            cfg = cell_config(
                base_cfg, eps, group[0], ledger_dir=ledgers, delta=delta, share=share,
                num_peers=n,
            )  # fmt: skip
            out[eps].update(run_cell(cfg, federation, base, group, ledgers))
    return out


# ---- parallel jobs ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """One (cell, ε, seed, plan group) in its own single-threaded process."""

    cell: Cell
    cfg: RunConfig
    eps: str
    group: tuple[str, ...]
    seed: int
    share: float
    ledger_root: str


def _job(job: Job) -> tuple[Job, dict[str, dict[str, Any]], float]:
    torch.set_num_threads(1)
    quiet_third_party()
    t0 = time.perf_counter()
    federation = load_federation(job.cfg.data)
    base = load_base(resolve_base_path(job.cfg.model))
    c = job.cell
    ledgers = (
        Path(job.ledger_root) / c.regime.name / c.mode / (c.security + c.tag) / f"seed-{job.seed}"
        / f"eps-{job.eps}" / job.group[0]
    )  # fmt: skip
    cfg = cell_config(
        job.cfg, job.eps, job.group[0], ledger_dir=ledgers, delta=c.regime.delta,
        share=job.share, num_peers=len(federation.peers),
    )  # fmt: skip
    try:
        out = run_cell(cfg, federation, base, job.group, ledgers)
    except Exception as exc:  # keep the other cells: report the failure in the results
        out = {label: {"error": f"{type(exc).__name__}: {exc}"} for label in job.group}
    return job, out, time.perf_counter() - t0


PerSeed = dict[int, dict[str, dict[str, dict[str, Any]]]]  # seed -> ε -> label -> record


def summarise(
    per_seed: PerSeed, epsilons: Sequence[str], labels: Sequence[str] = SIX
) -> dict[str, dict[str, dict[str, Any]]]:
    """{ε: {label: summary}} over seeds: test_ppl_mean/std and the ε figures from the ledgers."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for eps in epsilons:
        table[eps] = {}
        for label in labels:
            runs = [s[eps][label] for s in per_seed.values() if label in s.get(eps, {})]
            ok = [r for r in runs if "error" not in r]
            if not ok:
                if runs:
                    table[eps][label] = {"error": runs[0]["error"], "seeds": 0}
                continue
            table[eps][label] = _summary(eps, ok, [r["error"] for r in runs if "error" in r])
    return table


def _summary(eps: str, runs: list[dict[str, Any]], errors: list[str]) -> dict[str, Any]:
    ppl = [r["test_ppl"] for r in runs]
    m, s = mean_std(ppl)
    peers = [p for r in runs for p in r["peers"].values()]
    stops = [
        {"seed_run": i, "peer": pid, "round": p["stopped_sharing_round"]}
        for i, r in enumerate(runs)
        for pid, p in r["peers"].items()
        if p.get("stopped_sharing_round") is not None
    ]
    row: dict[str, Any] = {
        "test_ppl_mean": m,
        "test_ppl_std": s,
        "eps_spent_max": None,
        "seeds": len(runs),
        "test_ppl_per_seed": ppl,
        "val_ppl_mean": statistics.fmean(r["val_ppl"] for r in runs),
        "warmup_test_ppl_mean": statistics.fmean(r["warmup_test_ppl"] for r in runs),
        "target_epsilon": None if eps == "inf" else float(eps),
        "any_peer_stopped_sharing": bool(stops),
        "stopped_sharing": stops,
        "bytes_mean": statistics.fmean(float(r["bytes"]) for r in runs),
        "seconds_mean": statistics.fmean(float(r.get("seconds", 0.0)) for r in runs),
        "trust_last_round_seed0": runs[0]["trust"][-1] if runs[0].get("trust") else None,
    }
    if eps != "inf":
        spent = [p["epsilon_spent"] for p in peers]
        sigma = [p["noise_multiplier"] for p in peers]
        row["eps_spent_max"] = row["epsilon_spent_max"] = max(spent)
        row["epsilon_spent_mean"] = statistics.fmean(spent)
        row["epsilon_model_max"] = max(p["epsilon_model"] for p in peers)
        row["noise_multiplier_min"] = min(sigma)
        row["noise_multiplier_max"] = max(sigma)
        row["validation_noise_multiplier"] = peers[0]["validation_noise_multiplier"]
        row["scoring_queries_per_round"] = peers[0].get("scoring_queries_per_round", 0)
        row["delta"] = peers[0]["delta"]
        row["epsilon_dpsgd_alone_max"] = max(p["epsilon_dpsgd_alone"] for p in peers)
        row["epsilon_validation_alone_max"] = max(p["epsilon_validation_alone"] for p in peers)
    if errors:
        row["errors"] = errors
    return row


# ---- DP-SGD step time ------------------------------------------------------------------------
def step_time_ratio(
    base: BaseModel, blocks: torch.Tensor, lora: LoraSettings, *, steps: int, warmup: int
) -> dict[str, Any]:
    """Median DP-SGD step time / median plain step time, same model and the same batch.

    Plain = ``LocalTrainer.step`` on exactly ``blocks`` (B, T) (its epoch shuffle only reorders
    them); DP = ``DpTrainer._update`` on the same B blocks (Opacus ``GradSampleModule`` per-example
    gradients, clipping, Gaussian noise, AdamW). Steps alternate so that load drifts hit both.
    """
    batch = int(blocks.shape[0])
    tcfg = TrainConfig(batch_size=batch)
    plain = LocalTrainer(
        attach_lora(base.model, lora, peer_seed=0), blocks, tcfg, torch.Generator().manual_seed(0)
    )
    pcfg = PrivacyConfig(enabled=True, noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5)
    dp = DpTrainer(
        attach_lora(base.model, lora, peer_seed=1), blocks, tcfg, pcfg,
        torch.Generator().manual_seed(0),
    )  # fmt: skip
    idx = torch.arange(batch)
    variants = {"plain": plain.step, "dp": lambda: dp._update(idx)}
    times: dict[str, list[float]] = {k: [] for k in variants}
    cpu = torch.device("cpu")
    for i in range(warmup + steps):
        for name, fn in variants.items():
            t = timed(fn, cpu)
            if i >= warmup:
                times[name].append(t)
    dp.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "ratio": med["dp"] / med["plain"],
        "plain_median_s": med["plain"],
        "dp_median_s": med["dp"],
        "batch": list(blocks.shape),
        "steps": steps,
        "warmup": warmup,
        "torch_threads": torch.get_num_threads(),
        "lora_params": sum(p.numel() for p in plain.params),
    }


# ---- CLI -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="short schedule, 1 seed by default")
    ap.add_argument("--seeds", type=int, default=0, help="0 = 1 with --quick, else 3")
    ap.add_argument("--epsilons", nargs="*", default=list(EPSILONS), choices=list(EPSILONS))
    ap.add_argument("--regimes", nargs="*", default=["n60"], choices=list(REGIMES))
    ap.add_argument("--modes", nargs="*", default=["frozen-a"], choices=list(MODES))
    ap.add_argument("--security", nargs="*", default=["off"], choices=list(SECURITY))
    ap.add_argument(
        "--strategies",
        nargs="*",
        default=list(DEFAULT_STRATEGIES),
        help="strategy labels (collab.strategy.strategy_label), e.g. validation-t30",
    )
    ap.add_argument("--validation-share", type=float, default=VALIDATION_SHARE)
    ap.add_argument("--base", default="small", help="'small' or a local model directory")
    ap.add_argument("--shared-data-dir", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--lr", type=float, default=0.0, help="override the schedule's lr")
    ap.add_argument("--batch-size", type=int, default=0, help="override the regimes' batch")
    ap.add_argument("--rank", type=int, default=0, help="override LoRA r (alpha keeps alpha/r)")
    ap.add_argument("--warmup-steps", type=int, default=-1, help="override (smoke runs)")
    ap.add_argument("--local-steps", type=int, default=0, help="override (smoke runs)")
    ap.add_argument("--total-steps", type=int, default=0, help="override (smoke runs)")
    ap.add_argument("--jobs", type=int, default=2, help="parallel single-threaded processes")
    ap.add_argument("--timing-steps", type=int, default=30, help="0 = skip the step-time ratio")
    ap.add_argument("--ledger-dir", default="", help="keep the ledgers here (default: temporary)")
    ap.add_argument("--output", default="privacy_utility.json", help="name under results/ or path")
    ap.add_argument("--tag", default="", help="store the cells as '<cell>@TAG' (another recipe)")
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep the output file's other cells (add or replace only those run)",
    )
    args = ap.parse_args(argv)  # fmt: skip
    for label in args.strategies:
        strategy_from_label(label)  # unknown names refused before any work

    torch.set_num_threads(1)
    quiet_third_party()
    seeds = args.seeds or (1 if args.quick else 3)
    train = train_schedule("quick" if args.quick else "default")
    if args.lr:
        train = replace(train, lr=args.lr)
    if args.warmup_steps >= 0:
        train = replace(train, warmup_steps=args.warmup_steps)
    if args.local_steps:
        train = replace(train, local_steps=args.local_steps)
    if args.total_steps:
        train = replace(train, total_steps=args.total_steps)
    model = ModelConfig(base=args.base)
    base_path = resolve_base_path(model)  # build/cache once, before the workers start
    started = time.perf_counter()
    cells = [
        Cell(REGIMES[r], m, sec, args.tag)
        for r in args.regimes
        for m in args.modes
        for sec in args.security
    ]

    def lora(mode: str) -> LoraSettings:
        default = LoraSettings()
        r = args.rank or default.r
        return LoraSettings(mode=mode, r=r, alpha=default.alpha * r // default.r)  # type: ignore[arg-type]

    def cell_cfg(cell: Cell, seed: int) -> RunConfig:
        return RunConfig(
            model=model,
            lora=lora(cell.mode),
            data=DataConfig(
                source=SETTING,
                shared_data_dir=args.shared_data_dir,
                docs_per_peer=cell.regime.docs_per_peer,
                seed=seed,
            ),
            train=replace(train, seed=seed, batch_size=args.batch_size or cell.regime.batch_size),
            security=SecurityConfig(mode=cell.security),  # type: ignore[arg-type]
            output=OutputConfig(dir=tempfile.mkdtemp(prefix="pu-out-")),
        )

    timing: dict[str, Any] | None = None
    if args.timing_steps:  # first, while the machine is otherwise idle
        base = load_base(base_path)
        cfg0 = cell_cfg(cells[0], 0)
        first = load_federation(cfg0.data).peers[0]
        blocks = encode_blocks(first.train, base.tokenizer, cfg0.data.block_size)  # (N, T)
        timing = step_time_ratio(
            base, blocks[: train.batch_size], cfg0.lora, steps=args.timing_steps, warmup=5
        )
        print(f"DP-SGD step / plain step = {timing['ratio']:.2f}", file=sys.stderr)

    ledger_root = args.ledger_dir or tempfile.mkdtemp(prefix="pu-ledgers-")
    jobs: list[Job] = []
    for cell in cells:
        num_peers = len(load_federation(cell_cfg(cell, 0).data).peers)
        for group in plan_groups(cell_cfg(cell, 0), args.strategies, num_peers):
            for seed in range(seeds):
                for eps in args.epsilons:
                    jobs.append(
                        Job(cell, cell_cfg(cell, seed), eps, group, seed,
                            args.validation_share, ledger_root)
                    )  # fmt: skip
    jobs.sort(key=lambda j: -len(j.group))  # the long jobs first
    per_cell: dict[str, PerSeed] = {c.key: {s: {} for s in range(seeds)} for c in cells}
    out_path = Path(args.output)
    previous = _previous(out_path) if args.merge else {}

    def payload(done: int) -> dict[str, Any]:
        tables = {
            key: summarise(per_seed, args.epsilons, args.strategies)
            for key, per_seed in per_cell.items()
        }
        merged = {k: v for k, v in previous.items() if k.startswith(f"{SETTING}/")}
        for key, table in tables.items():  # merge per ε and strategy: a re-run replaces only those
            cell = merged.setdefault(key, {})
            for eps, rows in table.items():
                cell[eps] = {**cell.get(eps, {}), **rows}
        legacy = f"{SETTING}/n60/{args.modes[0]}/off"
        return {
            # the old key: the plain-mode n60 table of the first mode run (README "Privacy-utility")
            SETTING: merged.get(legacy, previous.get(SETTING, {})),
            **{k: merged[k] for k in sorted(merged)},
            "dp_step_time_ratio": timing["ratio"] if timing else previous.get("dp_step_time_ratio"),
            "dp_step_time": timing or previous.get("dp_step_time"),
            "_meta": {
                **({"previous_runs": _previous_meta(previous)} if previous else {}),
                "command": "python " + " ".join(["benchmarks/privacy_utility.py", *sys.argv[1:]]),
                "cells": [c.key for c in cells],
                "recipe": {
                    "batch_size": args.batch_size or None,
                    "lora_r": args.rank or LoraSettings().r,
                    "train": train.__dict__,
                },
                "jobs_done": done,
                "jobs_total": len(jobs),
                "complete": done == len(jobs),
                "seeds": seeds,
                "regimes": {r: REGIMES[r].__dict__ for r in args.regimes},
                "validation_share": args.validation_share,
                "epsilon_inf": "DP off (plain AdamW training, no clipping or noise, no ledger)",
                "train": train.__dict__,
                "privacy": {
                    "accountant": "rdp",
                    "max_grad_norm": PrivacyConfig().max_grad_norm,
                    "validation_loss_clip": PrivacyConfig().validation_loss_clip,
                    "budget": "= target ε per peer per run",
                    "noise": "seeded PRNG (secure_rng = false): same accounting as os.urandom",
                },
                "security_full": SecurityConfig(mode="full").__dict__,
                "base": str(base_path),
                "jobs": args.jobs,
                "seconds": time.perf_counter() - started,
                "machine": {**machine(), "cpu_model": cpu_model()},
            },
        }

    done = 0
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_job, j) for j in jobs]
        for fut in as_completed(futures):
            job, out, secs = fut.result()
            per_cell[job.cell.key][job.seed].setdefault(job.eps, {}).update(out)
            done += 1
            print(f"[{job.cell.key} ε={job.eps} seed {job.seed} {list(job.group)}] {secs:.0f}s",
                  file=sys.stderr, flush=True)  # fmt: skip
            write_result(out_path, payload(done))
    result = payload(done)
    path = write_result(out_path, result)
    for cell in cells:
        print(f"\n## {cell.key}")
        print_table(result[cell.key], args.epsilons, args.strategies)
    if timing:
        print(f"dp_step_time_ratio = {timing['ratio']:.3f} (target <= 1.5)")
    print(f"\nwrote {path}")
    return 0


def _previous(out: Path) -> dict[str, Any]:
    path = out if out.parent != Path(".") else RESULTS / out.name
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _previous_meta(previous: dict[str, Any]) -> list[Any]:
    meta = previous.get("_meta", {})
    older = meta.get("previous_runs", [])
    keep = ("command", "cells", "recipe", "seconds", "complete", "machine")
    this = {k: meta.get(k) for k in keep}
    return [*older, this]


def write_result(out: Path, payload: dict[str, Any]) -> Path:
    if out.parent == Path("."):
        return write_json(out.name, payload)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    return out


def print_table(
    table: dict[str, dict[str, dict[str, Any]]], epsilons: Sequence[str], labels: Sequence[str]
) -> None:
    """Rows = strategy, columns = ε: test ppl mean ± std, then ε spent (max over peers) and σ."""
    width = max(12, *(len(x) + 1 for x in labels))
    head = f"{'strategy':<{width}}" + "".join(
        f"{'ε=' + ('∞' if e == 'inf' else e):>22}" for e in epsilons
    )
    print(head)
    print("-" * len(head))
    for label in labels:
        cells = []
        for eps in epsilons:
            row = table.get(eps, {}).get(label)
            if row is None or "test_ppl_mean" not in row:
                cells.append(f"{'—':>22}")
            else:
                cells.append(f"{row['test_ppl_mean']:>13.1f} ± {row['test_ppl_std']:<6.1f}")
        print(f"{label:<{width}}" + "".join(cells))
    print("\nε spent (max over peers, ledger) / σ (DP-SGD, range over peers); * = a peer stopped")
    for label in labels:
        cells = []
        for eps in epsilons:
            row = table.get(eps, {}).get(label)
            if row is None or "test_ppl_mean" not in row or eps == "inf":
                cells.append(f"{'—':>22}")
                continue
            star = "*" if row["any_peer_stopped_sharing"] else ""
            sig = f"{row['noise_multiplier_min']:.2f}-{row['noise_multiplier_max']:.2f}"
            cells.append(f"{row['epsilon_spent_max']:>9.2f}{star} / σ {sig:<9}")
        print(f"{label:<{width}}" + "".join(cells))


if __name__ == "__main__":
    raise SystemExit(main())
