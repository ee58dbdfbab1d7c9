"""Benchmark: one default collaboration on settings, privacy regimes and partners it was not tuned on.

The toolkit's default (no ``[strategy]`` table: the logprob-shift calibrated top-3 rule with
acceptance, reciprocal consent, the kept model) runs *unchanged* on every cell; only the training
recipe depends on the base (chosen on validation by ``secure-pcft tune``) and on the privacy regime
(the README's DP recipe under DP). Per cell, next to it: the base with no fine-tuning, ``local``
(under DP: DP-local at its own best learning rate, chosen on validation), ``fedavg`` and the domain
``oracle``. A cell is ``<setting>/<privacy>/<attack>``:

* setting: ``leipzig-specific`` (9 peers, de/fr/it), ``agnews-specific`` (8 peers, 4 topics), the
  embedded demo corpus (6 peers, de/es/nl speeches), each on the small base; with ``--base
  smollm2`` the same on SmolLM2-135M (reduced: ``--peers 6``, one seed);
* privacy: ``off`` (plain mode; the default also in secure mode) or ``eps8`` (DP-SGD at ε = 8 per
  peer, full secure mode; the default also in plain mode; ``eps3``: the same at ε = 3);
* attack: ``none``, or one authenticated partner among 6 peers (secure mode, no DP) that sends a
  sign-flipped (``signflip``), scaled inside the norm bound (``x10``) or NaN (``nan``) adapter
  (``secure_pcft/audit/poisoning.py``); its ``test_ppl_mean`` is the victims' mean, compared with
  the same 6 peers without the attacker.

``--unit document`` / ``subject`` runs the cells with ``[privacy] unit`` of that name (the ε protects
a whole document / a speaker's documents; data/blocks.py, privacy/dp_trainer.py) and keys them
``<setting>@<unit>/<privacy>/<attack>``; the same recipe and δ as the block unit's cells.

Per label: ``test_ppl_mean`` / ``_std`` over seeds (mean over peers first; the default's is its kept
model, the baselines' their last round, as the paper measures them), ``worst_peer_vs_start`` (the
largest ratio of a peer's test perplexity to its starting point's, the model it held after the
warm-up or the base, chosen on validation), ``eps_spent_max`` (from the ledgers), what the default
adopted and how many peer-rounds a peer spent alone. Test splits choose nothing.

    python benchmarks/generalisation.py                                   # small base, all cells
    python benchmarks/generalisation.py --settings embedded --privacy off --attacks none --seeds 1
    python benchmarks/generalisation.py --base smollm2 --peers 6 --seeds 1 --settings \
        leipzig-specific --privacy off --attacks none --schedule quick --lr <tuned> --jobs 1 \
        --threads 2 --merge                                  # reduced SmolLM2 cell (lr: tune)
    python benchmarks/generalisation.py --settings embedded --privacy eps8 --attacks none \
        --unit document --skip-other-mode --results privacy_unit.json --merge   # issue 27, item 4

Results: ``benchmarks/results/generalisation.json`` (``--merge`` adds cells to it; a cell given
again is replaced), written after every finished job with the commit, command, config and machine
that produced it: ``_meta`` for the last invocation (earlier ones under ``earlier_invocations``),
``_commit`` / ``_command`` in each cell.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, RESULTS, load_results, mean_std, provenance, write_json

from secure_pcft.audit.poisoning import POISONINGS, make_poisoner
from secure_pcft.collab.strategy import make_strategy, strategy_label
from secure_pcft.config import (
    RECOMMENDED_STRATEGY,
    DataConfig,
    ModelConfig,
    OutputConfig,
    PrivacyConfig,
    RunConfig,
    SecurityConfig,
    StrategyConfig,
    TrainConfig,
)
from secure_pcft.data.settings import load_federation
from secure_pcft.model.loading import BaseModel, load_base, resolve_base_path
from secure_pcft.runtime.loopback import Simulation

SETTINGS = ("leipzig-specific", "agnews-specific", "embedded")
PRIVACY = ("off", "eps8", "eps3")
ATTACKS = ("none", *POISONINGS)
DEFAULT = "default"  # the label of the toolkit's default collaboration in the results
ATTACKER = 1  # the poisoning partner's index among the 6 peers (it has a same-domain partner)
EPSILONS = {"eps8": 8.0, "eps3": 3.0}  # the DP regimes: ε per peer for the whole run
DELTA = 1e-3  # < 1/n_train for every peer of every setting here (n_train ≤ ~200 blocks)
DP_LOCAL_LRS = (3e-3, 5e-3, 1e-2)  # DP-local's own recipe search (chosen on validation)
BASELINES = {"local": "local", "fedavg": "fedavg", "oracle": "oracle"}


def recipe(privacy: str, lr: float | None = None, schedule: str = "default") -> TrainConfig:
    """The training recipe of a privacy regime (the same on every setting of a base).

    ``off``: the strategies benchmark's (batch 8, lr 3e-3, 30 warm-up steps then 3 rounds of 10).
    ``eps8`` / ``eps3``: the README's DP recipe — batch 64 (the whole split in each step where a
    peer holds at most 64 units, q = 1; else q = 64 / units), lr 1e-2, 2 warm-up steps then 9 rounds of 2 (20 DP-SGD steps).
    ``lr`` overrides the learning rate (a base's own, from ``secure-pcft tune``). ``schedule =
    "quick"`` (the reduced CPU setting of a large base, labelled in the results): ``off`` runs 10
    warm-up steps then 2 rounds of 10.
    """
    if privacy == "off":
        t = TrainConfig(batch_size=8, lr=3e-3, warmup_steps=30, local_steps=10, total_steps=60)
        if schedule == "quick":
            t = replace(t, warmup_steps=10, total_steps=30)
    else:
        t = TrainConfig(batch_size=64, lr=1e-2, warmup_steps=2, local_steps=2, total_steps=20)
    return replace(t, lr=lr) if lr else t


@dataclass(frozen=True)
class Job:
    """One (setting, privacy, attack group, seed) of one base."""

    setting: str
    privacy: str
    attacks: tuple[str, ...]  # ("none",) or the poisonings (they share one no-attack reference)
    seed: int
    base: str
    peers: int
    lr: float | None
    shared_data_dir: str
    schedule: str = "default"
    threads: int = 1
    secure_default_only: bool = False  # re-run only the default's secure-mode labels
    other_mode: bool = True  # also the default in the other security mode
    unit: str = "block"  # [privacy] unit of the DP cells

    @property
    def setting_key(self) -> str:
        """The setting part of the cell key: ``embedded``, or ``embedded@document`` for a
        privacy unit other than the block."""
        return self.setting if self.unit == "block" else f"{self.setting}@{self.unit}"

    @property
    def name(self) -> str:
        prefix = "" if self.base == "small" else f"{self.base}/"
        return f"{prefix}{self.setting_key}/{self.privacy}/{'+'.join(self.attacks)}/seed{self.seed}"


def config(job: Job, *, security: str, strategy: StrategyConfig, ledgers: Path) -> RunConfig:
    peers = 6 if job.attacks != ("none",) else job.peers
    unit: Any = job.unit  # one of PRIVACY_UNITS (argparse choices)
    privacy = PrivacyConfig(unit=unit)
    if job.privacy in EPSILONS:
        privacy = PrivacyConfig(
            enabled=True, target_epsilon=EPSILONS[job.privacy], delta=DELTA,
            ledger_dir=str(ledgers), unit=unit,
        )  # fmt: skip
    return RunConfig(
        model=ModelConfig(base=job.base, device="cpu"),
        data=DataConfig(
            source=job.setting,
            num_peers=peers,
            seed=job.seed,
            shared_data_dir=job.shared_data_dir,
        ),
        train=replace(recipe(job.privacy, job.lr, job.schedule), seed=job.seed),
        strategy=strategy,
        privacy=privacy,
        security=SecurityConfig(mode=security),  # type: ignore[arg-type]
        output=OutputConfig(dir=str(ledgers.parent / "out"), save_adapters=False),
    )


def _figures(sim: Simulation, label: str, *, kept: bool, seconds: float) -> dict[str, Any]:
    """One label's per-peer figures from a finished branch (kept model or last round)."""
    res = sim.result(make_strategy(sim.cfg.strategy), seconds)
    last = res.final.test_ppl
    ppl = [k["test_ppl"] for k in res.kept] if kept else list(last)
    start = [k["start"]["test_ppl"] for k in res.kept]
    eps = [p.privacy.summary()["epsilon_spent"] for p in sim.peers if p.privacy is not None]
    summary = res.summary()
    return {
        "label": label,
        "test_ppl_per_peer": ppl,
        "last_test_ppl_per_peer": list(last),
        "kept_test_ppl_per_peer": [k["test_ppl"] for k in res.kept],
        "start_test_ppl_per_peer": start,
        "start_origin": [k["start"]["origin"] for k in res.kept],
        "kept_origin": [k["origin"] for k in res.kept],
        "base_test_ppl_per_peer": [k["base_test_ppl"] for k in res.kept],
        "val_ppl": statistics.fmean(p.evaluate("val").perplexity for p in sim.peers),
        "eps_spent_max": max(eps) if eps else 0.0,
        "adopted": summary.get("adopted", {}),
        "peer_rounds_alone": summary.get("peer_rounds_alone", 0),
        "trust_last": res.final.trust,
        "rejections": sum(len(v) for v in res.rejections.values()),
        "seconds": seconds,
    }


def branches(
    job: Job, base: BaseModel, security: str, planned: StrategyConfig,
    labels: dict[str, StrategyConfig], work: Path, attacker: str | None = None,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Warm up once (peers planned for ``planned``), then run each label from that snapshot."""
    cfg = config(job, security=security, strategy=planned, ledgers=work / "ledgers")
    sim = Simulation(cfg, load_federation(cfg.data), base)
    out: dict[str, dict[str, Any]] = {}
    try:
        warm = sim.branch_point()
        if attacker is not None:
            make_poisoner(sim.peers[ATTACKER], attacker)
        for label, scfg in labels.items():
            t0 = time.perf_counter()
            sim.run_branch(warm, scfg, evaluate_every_round=False,
                           ledger_dir=work / "ledgers" / f"{security}-{label}-{attacker}")  # fmt: skip
            out[label] = _figures(sim, label, kept=scfg.accept, seconds=time.perf_counter() - t0)
    finally:
        sim.close()
    return out


def dp_local_best(job: Job, base: BaseModel, work: Path) -> dict[str, Any]:
    """DP-local at its own best learning rate: each of ``DP_LOCAL_LRS``, chosen on validation."""
    tried = {}
    for lr in DP_LOCAL_LRS:
        lr_job = replace(job, lr=lr)
        tried[lr] = branches(lr_job, base, "off", StrategyConfig(name="local"),
                             {"local": StrategyConfig(name="local")}, work / f"lr{lr:g}")["local"]  # fmt: skip
    best = min(tried, key=lambda lr: tried[lr]["val_ppl"])
    return {**tried[best], "chosen_lr": best,
            "val_ppl_by_lr": {f"{lr:g}": t["val_ppl"] for lr, t in tried.items()}}  # fmt: skip


def run_job(job: Job) -> tuple[Job, dict[str, dict[str, Any]], float]:
    """Every label of one job (in its own process, ``job.threads`` torch threads)."""
    torch.set_num_threads(job.threads)
    t0 = time.perf_counter()
    base = load_base(resolve_base_path(ModelConfig(base=job.base)), device="cpu")
    default = RECOMMENDED_STRATEGY
    baselines = {k: StrategyConfig(name=v) for k, v in BASELINES.items()}
    with tempfile.TemporaryDirectory(prefix="secure-pcft-generalisation-") as tmp:
        work = Path(tmp)
        cells: dict[str, dict[str, dict[str, Any]]] = {}
        if job.attacks == ("none",):
            dp = job.privacy in EPSILONS
            headline = "full" if dp else "off"
            other = "off" if dp else "full"
            labels: dict[str, dict[str, Any]] = {}
            if job.secure_default_only:  # what a change to secure mode alone can move
                label = DEFAULT if dp else f"{DEFAULT}-secure"
                labels[label] = branches(job, base, "full", default, {DEFAULT: default},
                                         work / "default")[DEFAULT]  # fmt: skip
                cells[f"{job.privacy}/none"] = labels
                return job, cells, time.perf_counter() - t0
            if dp:  # each privacy plan its own warm-up (2 DP-SGD steps)
                labels.update(branches(job, base, "full", baselines["fedavg"],
                                       {"fedavg": baselines["fedavg"], "oracle": baselines["oracle"]},
                                       work / "base"))  # fmt: skip
                labels["local"] = dp_local_best(job, base, work / "dp-local")
            else:
                labels.update(branches(job, base, "off", baselines["local"], baselines,
                                       work / "base"))  # fmt: skip
            labels[DEFAULT] = branches(job, base, headline, default, {DEFAULT: default},
                                       work / "default")[DEFAULT]  # fmt: skip
            if job.other_mode:
                labels[f"{DEFAULT}-{'plain' if dp else 'secure'}"] = branches(
                    job, base, other, default, {DEFAULT: default}, work / "default-other"
                )[DEFAULT]
            first = next(iter(labels.values()))
            labels["base"] = {"test_ppl_per_peer": first["base_test_ppl_per_peer"],
                              "start_test_ppl_per_peer": first["start_test_ppl_per_peer"],
                              "eps_spent_max": 0.0}  # fmt: skip
            cells[f"{job.privacy}/none"] = labels
        else:
            pair = {DEFAULT: default, "fedavg": baselines["fedavg"]}
            if job.secure_default_only:
                pair = {DEFAULT: default}
            clean = branches(job, base, "full", default, pair, work / "clean")
            for attack in job.attacks:
                hit = branches(job, base, "full", default, pair, work / attack, attacker=attack)
                for label in pair:
                    victims = [
                        i for i in range(len(hit[label]["test_ppl_per_peer"])) if i != ATTACKER
                    ]
                    for fig in (hit[label], clean[label]):
                        fig["victims"] = [fig["test_ppl_per_peer"][i] for i in victims]
                        fig["victims_start"] = [fig["start_test_ppl_per_peer"][i] for i in victims]
                    hit[label]["victims_without_attack"] = clean[label]["victims"]
                cells[f"{job.privacy}/{attack}"] = hit
    return job, cells, time.perf_counter() - t0


def merge_from(target: Path, source: Path) -> None:
    """Copy ``source``'s cells into ``target`` (two invocations that ran side by side write two
    files); each copied cell keeps its ``_commit`` / ``_command``, and ``source``'s ``_meta``
    joins ``target``'s ``earlier_invocations``."""
    into, other = load_results(target), load_results(source)
    if not other.get("_meta"):
        raise SystemExit(f"{source}: no results of generalisation.py to merge")
    for key, cell in other.items():
        if not key.startswith("_"):
            into[key] = cell
    meta = into.setdefault("_meta", {})
    meta.setdefault("earlier_invocations", []).append(
        {**{k: v for k, v in other["_meta"].items() if k != "earlier_invocations"},
         "merged_from": source.name}
    )  # fmt: skip
    into["_targets"] = targets(into)
    write_json(target.name, into)
    print(f"merged {sum(not k.startswith('_') for k in other)} cells of {source} into {target}")


def merge_labels(
    payload: dict[str, Any], key: str, fresh: dict[str, Any], job: Job, commit: str, secs: float
) -> None:
    """Put re-run labels into an existing cell (``--secure-default-only``): the other labels keep
    their figures and their commit; ``_label_commits`` says which code produced each."""
    cell = payload.get(key)
    if cell is None or cell.get("_seeds") != [job.seed]:
        raise SystemExit(f"{key}: --secure-default-only needs an existing one-seed cell of seed "
                         f"{job.seed} to merge into")  # fmt: skip
    commits = cell.setdefault("_label_commits", {})
    for label in cell:
        if not label.startswith("_"):
            commits.setdefault(label, cell.get("_commit", ""))
    for label, figures in fresh.items():
        cell[label] = figures
        commits[label] = commit
    cell["_rerun_seconds"] = {**cell.get("_rerun_seconds", {}), **dict.fromkeys(fresh, secs)}


def seeds_kept(
    earlier: dict[str, Any], key: str, jobs: list[Job], prefix: str
) -> list[dict[str, Any]]:
    """The per-seed records of an earlier invocation's cell ``key`` that this invocation's
    ``jobs`` do not re-run (a re-run seed replaces its record)."""
    setting_privacy, attack = key[len(prefix) :].rsplit("/", 1)
    rerun = {j.seed for j in jobs
             if f"{j.setting_key}/{j.privacy}" == setting_privacy and attack in j.attacks}  # fmt: skip
    return [s for s in earlier.get("_per_seed", []) if s["seed"] not in rerun]


def aggregate(per_seed: list[dict[str, dict[str, Any]]], attack: str) -> dict[str, Any]:
    """Mean ± std over seeds of each label's per-seed mean (victims' mean in attack cells)."""
    out: dict[str, Any] = {}
    for label in per_seed[0]:
        key, start = (("test_ppl_per_peer", "start_test_ppl_per_peer") if attack == "none"
                      else ("victims", "victims_start"))  # fmt: skip
        means = [statistics.fmean(s[label][key]) for s in per_seed]
        m, sd = mean_std(means)
        worst = max(
            max(p / q for p, q in zip(s[label][key], s[label][start], strict=True))
            for s in per_seed
        )
        cell = {"test_ppl_mean": m, "test_ppl_std": sd, "worst_peer_vs_start": worst,
                "eps_spent_max": max(s[label].get("eps_spent_max", 0.0) for s in per_seed),
                "test_ppl_per_seed": means}  # fmt: skip
        if attack != "none":
            clean = [statistics.fmean(s[label]["victims_without_attack"]) for s in per_seed]
            cell["victims_without_attack_mean"] = statistics.fmean(clean)
            cell["vs_without_attack"] = m / statistics.fmean(clean)
        for extra in ("adopted", "peer_rounds_alone", "chosen_lr", "rejections"):
            if extra in per_seed[0][label]:
                cell[extra] = [s[label][extra] for s in per_seed]
        out[label] = cell
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--settings", nargs="*", default=list(SETTINGS))
    ap.add_argument("--privacy", nargs="*", default=list(PRIVACY), choices=PRIVACY)
    ap.add_argument("--attacks", nargs="*", default=list(ATTACKS), choices=ATTACKS)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--attack-seeds", type=int, default=2)
    ap.add_argument("--base", default="small", help="small or smollm2 (or a local HF folder)")
    ap.add_argument("--peers", type=int, default=0, help="peers per setting; 0 = the setting's")
    ap.add_argument("--lr", type=float, default=0.0, help="the base's lr (0 = the recipe's)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per job")
    ap.add_argument(
        "--schedule",
        default="default",
        choices=("default", "quick"),
        help="quick: 10 warm-up steps + 2 rounds of 10 without DP (large bases on CPU)",
    )
    ap.add_argument("--shared-data-dir", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--merge", action="store_true", help="add cells to the existing JSON")
    ap.add_argument(
        "--skip-other-mode",
        action="store_true",
        help="leave out the default in the other security mode (a large base on CPU)",
    )
    ap.add_argument(
        "--results",
        default="generalisation.json",
        help="results file under benchmarks/results/ (default generalisation.json)",
    )
    ap.add_argument(
        "--merge-from",
        metavar="FILE",
        help="copy the cells of another results file (e.g. a SmolLM2 invocation run "
        "beside this one) into --results, with its stamp, and exit",
    )
    ap.add_argument(
        "--unit",
        default="block",
        choices=("block", "document", "subject"),
        help="[privacy] unit of the runs (cells keyed '<setting>@<unit>/...' unless block)",
    )
    ap.add_argument("--secure-default-only", action="store_true",
                    help="re-run only the default's secure-mode labels of existing cells and merge "
                    "them in (after a change only secure mode sees; each label keeps its commit)")  # fmt: skip
    ap.add_argument(
        "--markdown",
        action="store_true",
        help="print the README's table from the existing JSON and exit (runs nothing)",
    )
    args = ap.parse_args(argv)
    args.merge = args.merge or args.secure_default_only  # it only ever merges into cells
    if args.merge_from:
        merge_from(RESULTS / args.results, Path(args.merge_from))
        return 0
    if args.markdown:
        print(markdown_table(load_results(RESULTS / args.results)))
        return 0

    resolve_base_path(ModelConfig(base=args.base))  # build/convert once, before the workers
    jobs = []
    for setting in args.settings:
        for privacy in args.privacy:
            if "none" in args.attacks:
                jobs += [Job(setting, privacy, ("none",), s, args.base, args.peers,
                             args.lr or None, args.shared_data_dir, args.schedule, args.threads,
                             args.secure_default_only, not args.skip_other_mode, args.unit)
                         for s in range(args.seeds)]  # fmt: skip
            poisonings = tuple(a for a in args.attacks if a != "none")
            if poisonings and privacy == "off":
                jobs += [Job(setting, privacy, poisonings, s, args.base, args.peers,
                             args.lr or None, args.shared_data_dir, args.schedule, args.threads,
                             args.secure_default_only, not args.skip_other_mode, args.unit)
                         for s in range(args.attack_seeds)]  # fmt: skip
    # one job of each kind first, so that a failing kind shows within minutes; long ones early
    jobs.sort(key=lambda j: (j.seed, j.attacks == ("none",), j.privacy == "off"))
    path = RESULTS / args.results
    payload: dict[str, Any] = load_results(path) if args.merge else {}
    # a merged cell keeps the seeds this invocation does not re-run (``_per_seed``, with the commit
    # that produced each); a seed given again is replaced
    old = payload.get("_meta")
    previous_meta: list[dict[str, Any]] = []
    if isinstance(old, dict):
        previous_meta = [*old.get("earlier_invocations", []),
                         {k: v for k, v in old.items() if k != "earlier_invocations"}]  # fmt: skip
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    started = time.perf_counter()
    # the code the jobs run: read once at the start (later commits do not reach the workers)
    stamp = provenance(argv, "generalisation.py")
    prefix = "" if args.base == "small" else f"{Path(args.base).name}/"
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(run_job, j) for j in jobs]
        for fut in as_completed(futures):
            try:
                job, cells, secs = fut.result()
            except Exception as exc:  # one failed job must not lose the others' figures
                print(f"job failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                payload.setdefault("_failed", []).append(f"{type(exc).__name__}: {exc}")
                continue
            print(f"[{job.name}] {secs:.0f} s", file=sys.stderr, flush=True)
            commit = stamp["commit"] + ("-dirty" if stamp["dirty"] else "")
            for cell, labels in cells.items():
                key = f"{prefix}{job.setting_key}/{cell}"
                if args.secure_default_only:
                    merge_labels(payload, key, aggregate([labels], cell.split("/")[1]), job,
                                 commit, secs)  # fmt: skip
                    continue
                if key not in raw:  # first result of this cell here: keep the seeds not re-run
                    earlier = payload.get(key, {}) if args.merge else {}
                    raw[key] = {"seeds": seeds_kept(earlier, key, jobs, prefix)}
                raw[key]["seeds"].append(
                    {"seed": job.seed, "seconds": secs, "commit": commit, **labels}
                )
                seeds = sorted(raw[key]["seeds"], key=lambda s: s["seed"])
                skip = ("seed", "seconds", "commit")
                payload[key] = aggregate(
                    [{k: v for k, v in s.items() if k not in skip} for s in seeds],
                    cell.split("/")[1],
                )
                payload[key]["_seeds"] = [s["seed"] for s in seeds]
                payload[key]["_job_seconds"] = [s["seconds"] for s in seeds]
                # with --merge one file holds cells of several invocations: each names its own
                payload[key]["_commit"] = commit
                payload[key]["_commits_per_seed"] = [s.get("commit", "") for s in seeds]
                payload[key]["_command"] = stamp["command"]
                payload[key]["_per_seed"] = seeds
                payload[key]["_recipe"] = recipe(job.privacy, job.lr, job.schedule).__dict__
            meta = {
                "default": strategy_label(RECOMMENDED_STRATEGY),
                **stamp,
                "recipes": {
                    p: recipe(p, args.lr or None, args.schedule).__dict__ for p in args.privacy
                },
                "base": args.base,
                "seconds": time.perf_counter() - started,
            }
            earlier = previous_meta if args.merge else []
            payload["_meta"] = {**meta, "earlier_invocations": earlier}
            payload["_targets"] = targets(payload)
            write_json(args.results, payload)
    print_table(payload)
    return 0


def targets(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Issue 24's targets per cell, from the aggregated figures (test splits chose nothing)."""
    out: dict[str, dict[str, Any]] = {}
    for key, cell in payload.items():
        if key.startswith("_") or DEFAULT not in cell:
            continue
        d = cell[DEFAULT]
        t: dict[str, Any] = {"worst_peer_vs_start": d["worst_peer_vs_start"],
                             "kept_within_2pct_of_start": d["worst_peer_vs_start"] <= 1.02}  # fmt: skip
        if key.endswith("/none"):
            best = min(cell[k]["test_ppl_mean"] for k in ("local", "fedavg") if k in cell)
            t["vs_min_local_fedavg"] = d["test_ppl_mean"] / best
            t["le_0.97_min_local_fedavg"] = t["vs_min_local_fedavg"] <= 0.97
            t["vs_base"] = d["test_ppl_mean"] / cell["base"]["test_ppl_mean"]
            t["le_base"] = t["vs_base"] <= 1.0
            other = next((k for k in cell if k.startswith(f"{DEFAULT}-")), None)
            if other:
                dp = any(f"/{p}/" in key for p in EPSILONS)
                secure, plain = (DEFAULT, other) if dp else (other, DEFAULT)
                t["secure_vs_plain"] = cell[secure]["test_ppl_mean"] / cell[plain]["test_ppl_mean"]
                t["secure_within_3pct_of_plain"] = t["secure_vs_plain"] <= 1.03
            if any(f"/{p}/" in key for p in EPSILONS):
                t["vs_dp_local_best"] = d["test_ppl_mean"] / cell["local"]["test_ppl_mean"]
                t["below_dp_local"] = t["vs_dp_local_best"] < 1.0
        else:
            t["victims_vs_without_attack"] = d["vs_without_attack"]
            t["victims_within_3pct"] = d["vs_without_attack"] <= 1.03
        out[key] = t
    return out


def markdown_table(payload: dict[str, Any]) -> str:
    """The README's table: per cell, mean test ppl of each label (± std over seeds), the default's
    ratio to the best of local and FedAvg (attack cells: victims' ratio to the run without the
    attacker), its worst kept-vs-start ratio, the peer-rounds it spent alone, seeds and wall time."""

    def fig(cell: dict[str, Any], label: str) -> str:
        if label not in cell:
            return "—"
        c = cell[label]
        sd = f" ± {c['test_ppl_std']:.1f}" if len(cell.get("_seeds", [])) > 1 else ""
        return f"{c['test_ppl_mean']:.1f}{sd}"

    head = ("| cell | base | local | FedAvg | oracle | **default** | default, other mode | "
            "default / min(local, FedAvg) | worst kept / start | peer-rounds alone | seeds | "
            "wall (one job, one seed) |")  # fmt: skip
    rows = [head, "|" + "---|" * 12]
    for key, cell in payload.items():
        if key.startswith("_") or DEFAULT not in cell:
            continue
        d, t = cell[DEFAULT], payload.get("_targets", {}).get(key, {})
        other = next((k for k in cell if k.startswith(f"{DEFAULT}-")), None)
        if key.endswith("/none"):
            ratio = f"{t.get('vs_min_local_fedavg', float('nan')):.3f}"
        else:
            ratio = f"victims ×{d['vs_without_attack']:.3f} (FedAvg ×{cell['fedavg']['vs_without_attack']:.2f})"
        alone = sum(d.get("peer_rounds_alone", [0]))
        secs = cell.get("_job_seconds", [0.0])[0]
        rows.append(
            f"| `{key}` | {fig(cell, 'base')} | {fig(cell, 'local')} | {fig(cell, 'fedavg')} | "
            f"{fig(cell, 'oracle')} | **{fig(cell, DEFAULT)}** | "
            f"{fig(cell, other) if other else '—'} | {ratio} | {d['worst_peer_vs_start']:.3f} | "
            f"{alone} | {len(cell.get('_seeds', []))} | {secs / 60:.0f} min |"
        )
    return "\n".join(rows)


def print_table(payload: dict[str, Any]) -> None:
    labels = ["base", "local", "fedavg", "oracle", DEFAULT]
    width = max(len(k) for k in payload) + 2
    print(f"{'cell':<{width}}" + "".join(f"{lab:>12}" for lab in labels) + f"{'worst/start':>13}")
    for key, cell in payload.items():
        if key.startswith("_"):
            continue
        row = "".join(
            f"{cell[lab]['test_ppl_mean']:>12.1f}" if lab in cell else f"{'—':>12}"
            for lab in labels
        )
        print(f"{key:<{width}}{row}{cell[DEFAULT]['worst_peer_vs_start']:>13.3f}")


if __name__ == "__main__":
    raise SystemExit(main())
