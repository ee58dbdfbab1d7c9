"""Running audit campaigns: real target runs, every attack, thresholds, results JSON, summary.

:func:`run_campaign` trains (or observes) the target once per trial with the toolkit's own
trainers, runs every attack of the campaign on it, averages the metrics over trials, checks the
thresholds, and returns a :class:`CampaignResult` (written as ``<output>/<name>.json``).
:func:`write_summary` merges the ``[campaign.summary]`` figures of several campaigns into one
``summary.json``. Results hold metrics, scores and ROC points only — never private text, canary
secrets or adapter tensors.
"""

from __future__ import annotations

import hashlib
import logging
import math
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from secure_pcft import bounded_json
from secure_pcft.audit.attack import AttackResult, in_unit, make_attack
from secure_pcft.audit.campaign import AttackSpec, Campaign, load_campaign
from secure_pcft.audit.collab_target import build_collaboration_target
from secure_pcft.audit.metrics import HEADLINE_METRICS, across_trials
from secure_pcft.audit.target import AuditTarget, build_target
from secure_pcft.audit.updates import build_update_target
from secure_pcft.data.blocks import unit_count
from secure_pcft.data.corpus import Federation
from secure_pcft.data.settings import load_federation
from secure_pcft.errors import CorruptFileError
from secure_pcft.fileio import json_safe, write_json_atomic
from secure_pcft.model.cache import base_identity
from secure_pcft.model.loading import BaseModel, load_base, resolve_base_path
from secure_pcft.privacy.attack_bounds import tpr_bound_eps_delta
from secure_pcft.provenance import stamp
from secure_pcft.versions import library_versions

# pass / fail against the campaign's thresholds; none: the campaign set no thresholds (measured only).
Verdict = Literal["pass", "fail", "none"]

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    if finite:
        return float(np.mean(finite))
    return values[0] if values and all(v == values[0] for v in values) else math.nan


@dataclass
class AttackOutcome:
    """One attack over all trials: per-trial results, means, and the threshold verdict."""

    spec: AttackSpec
    results: list[AttackResult] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, float]:
        """Means over trials; with two or more trials, the headline figures also get a 95 %
        Student-t interval over trials (``<figure>_trials_ci_low`` / ``_high``): the spread that
        different target and reference seeds give, which one trial's bootstrap cannot show."""
        keys = dict.fromkeys(k for r in self.results for k in r.metrics)
        out = {k: _mean([float(r.metrics.get(k, math.nan)) for r in self.results]) for k in keys}
        if len(self.results) >= 2:
            for m in HEADLINE_METRICS:
                if m in out:
                    values = [float(r.metrics.get(m, math.nan)) for r in self.results]
                    out[f"{m}_trials_ci_low"], out[f"{m}_trials_ci_high"] = across_trials(
                        values, bounds=(0.0, 1.0)
                    )
        return out

    @property
    def failures(self) -> list[str]:
        m, out = self.metrics, []
        for bound, table, ok in (("max", self.spec.max, float.__le__),
                                 ("min", self.spec.min, float.__ge__)):  # fmt: skip
            for metric, limit in table.items():
                value = m.get(metric, math.nan)
                if math.isnan(value) or not ok(float(value), float(limit)):
                    out.append(f"{self.spec.label}.{metric} = {value:.4g} violates {bound} {limit}")
        return out

    @property
    def checked(self) -> bool:
        """Whether the campaign set any threshold for this attack (else it is measured only)."""
        return bool(self.spec.max or self.spec.min)

    @property
    def verdict(self) -> Verdict:
        if not self.checked:
            return "none"
        return "fail" if self.failures else "pass"

    def to_dict(self) -> dict[str, Any]:
        first = self.results[0]
        return {
            "label": self.spec.label,
            "name": self.spec.name,
            "threat_models": list(first.threat_models),
            "params": dict(self.spec.params),
            "metrics": self.metrics,
            "per_trial": [r.to_dict() for r in self.results],
            "thresholds": {"max": dict(self.spec.max), "min": dict(self.spec.min)},
            "failures": self.failures,
            "verdict": self.verdict,
            "passed": None if not self.checked else not self.failures,
        }


@dataclass
class CampaignResult:
    """What a campaign measured."""

    campaign: Campaign
    base_model: str
    targets: list[dict[str, Any]]
    attacks: list[AttackOutcome]
    seconds: float
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> Verdict:
        """``fail`` if any threshold is violated; ``none`` if the campaign sets no threshold at all
        (it measured, it did not judge); else ``pass``."""
        verdicts = {a.verdict for a in self.attacks}
        if "fail" in verdicts:
            return "fail"
        return "pass" if "pass" in verdicts else "none"

    @property
    def passed(self) -> bool:
        """True only for a ``pass`` verdict (a campaign without thresholds has not passed)."""
        return self.verdict == "pass"

    def lookup(self, ref: str) -> float:
        """A ``label.metric`` or ``target.epsilon`` figure (mean over trials)."""
        head, metric = ref.split(".", 1)
        if head == "target":
            return _mean([float(t.get(metric, math.nan)) for t in self.targets])
        by_label = {a.spec.label: a for a in self.attacks}
        return by_label[head].metrics.get(metric, math.nan)

    @property
    def summary(self) -> dict[str, float]:
        """``[campaign.summary]`` keys → values (the maximum of several references)."""
        out = {}
        for key, refs in self.campaign.summary.items():
            values = [v for v in (self.lookup(r) for r in refs) if not math.isnan(v)]
            out[key] = max(values) if values else math.nan
        return out

    @property
    def tpr_bounds(self) -> dict[str, float | None]:
        """``tpr_bound_at_fpr_<f>`` for FPR 1 % and 0.1 %: the bound (ε, δ) of the first trial's
        target implies on any membership test (1 without DP; None without a δ)."""
        first = self.targets[0] if self.targets else {}
        eps, delta = float(first.get("epsilon", math.inf)), first.get("delta")
        out: dict[str, float | None] = {}
        for fpr in (0.01, 0.001):
            bound: float | None = 1.0
            if math.isfinite(eps):
                if isinstance(delta, float) and math.isfinite(delta):
                    bound = tpr_bound_eps_delta(eps, delta, fpr)
                else:
                    bound = None
            out[f"tpr_bound_at_fpr_{fpr:g}"] = bound
        return out

    def to_dict(self) -> dict[str, Any]:
        c = self.campaign
        return json_safe(
            {
                "campaign": c.name,
                "description": c.description,
                "source": c.source,
                "threat_models": list(c.threat_models),
                "trials": c.trials,
                "seed": c.seed,
                "base_model": self.base_model,
                "targets": self.targets,
                # what the candidates are, and the largest TPR any attack may reach at these
                # FPRs against the first target's (ε, δ) (privacy/attack_bounds.py)
                "unit": c.target.run.privacy.unit,
                **self.tpr_bounds,
                "attacks": [a.to_dict() for a in self.attacks],
                "summary": self.summary,
                "verdict": self.verdict,
                "passed": None if self.verdict == "none" else self.passed,
                "seconds": self.seconds,
                "versions": library_versions(),
                # the code, command and machine that produced these figures (benchmarks/stale.py)
                "provenance": self.provenance,
            }
        )

    def write_json(self, directory: str | Path) -> Path:
        """Write ``<directory>/<campaign name>.json`` and its per-example scores, atomically."""
        write_json_atomic(Path(directory) / f"{self.campaign.name}.scores.json", self.scores())
        return write_json_atomic(Path(directory) / f"{self.campaign.name}.json", self.to_dict())

    def scores(self) -> dict[str, Any]:
        """Every attack's per-example scores, per trial (``<name>.scores.json``).

        ``member_scores[k]`` is the score of the k-th member example of that trial's target (its
        training blocks, inserted canaries or used tokens, in the target's order), likewise for
        non-members; higher = "member". Enough to recompute any ROC figure, bootstrap intervals, or
        compare attacks example by example.
        """
        return json_safe(
            {
                "format": "secure-pcft-audit-scores/1",
                "campaign": self.campaign.name,
                "attacks": [
                    {
                        "label": a.spec.label,
                        "name": a.spec.name,
                        "trials": [
                            {
                                "trial": t,
                                "member_scores": list(r.member_scores),
                                "nonmember_scores": list(r.nonmember_scores),
                            }
                            for t, r in enumerate(a.results)
                        ],
                    }
                    for a in self.attacks
                ],
            }
        )


def _trial_target(
    campaign: Campaign, base: BaseModel, federation: Federation, seed: int
) -> AuditTarget:
    if campaign.update is not None:
        return build_update_target(campaign.target, campaign.update, base, federation, seed)
    if campaign.collaboration is not None:
        return build_collaboration_target(
            campaign.target, campaign.collaboration, base, federation, seed
        )
    return build_target(campaign.target, base, federation, seed)


def _target_facts(target: AuditTarget) -> dict[str, Any]:
    facts: dict[str, Any] = {"seed": target.seed, "epsilon": target.epsilon}
    facts["delta"] = target.delta if target.delta is not None else math.nan
    facts.update(target.notes)
    facts.update({"members": int(target.members.shape[0]),
                  "nonmembers": int(target.nonmembers.shape[0]),
                  "population": int(target.population.shape[0]), "unit": target.unit})  # fmt: skip
    if target.member_units is not None and target.nonmember_units is not None:
        facts.update({"member_units": unit_count(target.member_units, 0),
                      "nonmember_units": unit_count(target.nonmember_units, 0)})  # fmt: skip
    return facts


def run_campaign(
    campaign: Campaign, *, base: BaseModel | None = None, progress: ProgressFn | None = None
) -> CampaignResult:
    """Run every trial and attack of ``campaign`` (real training runs; minutes on a small base).

    Args:
        campaign: the validated campaign.
        base: an already loaded base (else ``[target.model]`` is resolved and loaded).
        progress: ``(stage, done, total)`` callback (the CLI draws bars with it).

    Raises:
        SecurePcftError: data, model, training or attack errors propagate with their types.
    """
    start = time.perf_counter()
    provenance = {**stamp(shlex.join(sys.argv)), "campaign_sha256": _sha256(campaign.source)}
    if base is None:
        base = load_base(resolve_base_path(campaign.target.run.model))
    federation = load_federation(campaign.target.run.data)
    outcomes = [AttackOutcome(spec) for spec in campaign.attacks]
    targets = []
    total = campaign.trials * (1 + len(outcomes))
    done = 0
    for trial in range(campaign.trials):
        seed = campaign.seed + trial
        target = _trial_target(campaign, base, federation, seed)
        targets.append(_target_facts(target))
        done += 1
        if progress:
            progress(campaign.name, done, total)
        for index, outcome in enumerate(outcomes):
            attack = make_attack(outcome.spec.name, **dict(outcome.spec.params))
            result = attack.run(target, np.random.default_rng([seed, index, 1_000_003]))
            if attack.candidate_scores:  # a document / subject target: one score per unit
                result = in_unit(result, target)
            outcome.results.append(result)
            log.info("%s/%s trial %d: %s", campaign.name, outcome.spec.label, trial,
                     {k: round(v, 4) for k, v in result.metrics.items()})  # fmt: skip
            done += 1
            if progress:
                progress(campaign.name, done, total)
    return CampaignResult(campaign, str(base.path), targets, outcomes,
                          time.perf_counter() - start, provenance)  # fmt: skip


def _sha256(path: str) -> str | None:
    """SHA-256 of the campaign file (None for a campaign built in code)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None
    except OSError:
        return None


SUMMARY_FILE = "summary.json"
_SUMMARY_LIMITS = bounded_json.JsonLimits(max_bytes=4 * 1024 * 1024, max_depth=8)


def read_summary(directory: str | Path) -> dict[str, Any]:
    """The ``summary.json`` of ``directory`` ({} if there is none).

    Raises:
        CorruptFileError: the file is not a JSON object with ``_sources`` (campaign per key).
    """
    path = Path(directory) / SUMMARY_FILE
    if not path.exists():
        return {}
    data = bounded_json.loads(path.read_bytes(), _SUMMARY_LIMITS, CorruptFileError, str(path))
    if not isinstance(data, dict) or not isinstance(data.get("_sources", {}), dict):
        raise CorruptFileError(f"{path}: not an audit summary (an object with '_sources')")
    return data


def write_summary(results: Iterable[CampaignResult], directory: str | Path) -> Path:
    """Merge the summaries of ``results`` into ``<directory>/summary.json`` (with provenance).

    Figures of campaigns that did not run now are kept from the existing file, with their
    sources; every figure of a campaign that ran is replaced (or dropped if it no longer has it).

    Raises:
        CorruptFileError: the existing summary cannot be read (nothing is overwritten).
    """
    results = list(results)
    previous = read_summary(directory)
    ran = {r.campaign.name for r in results}
    old_sources: dict[str, str] = previous.get("_sources", {})
    summary: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, source in old_sources.items():
        if source not in ran and key in previous:
            summary[key], sources[key] = previous[key], source
    kept = previous.get("_base_models", []) if summary else []
    bases = {base_identity(str(b)) for b in kept}  # names, portable (older files held paths)
    for r in results:
        for key, value in r.summary.items():
            summary[key] = value
            sources[key] = r.campaign.name
        bases.add(base_identity(r.base_model))
    out = {**summary, "_sources": sources, "_base_models": sorted(bases)}
    return write_json_atomic(Path(directory) / SUMMARY_FILE, json_safe(out))


def with_base(campaign: Campaign, base: str) -> Campaign:
    """``campaign`` with ``[target.model] base`` replaced (``"small"``, a local dir or .gguf)."""
    run = campaign.target.run
    target = replace(campaign.target, run=replace(run, model=replace(run.model, base=base)))
    return replace(campaign, target=target)


def run_campaign_files(
    paths: Sequence[str | Path],
    output_dir: str | Path,
    *,
    base: str | None = None,
    progress: ProgressFn | None = None,
) -> list[CampaignResult]:
    """Load, run and write every campaign of ``paths``; merge their summaries.

    Writes ``<output_dir>/<name>.json`` per campaign and, if any campaign has a
    ``[campaign.summary]``, ``<output_dir>/summary.json``. Campaigns are all loaded (validated)
    before the first one runs, so a typo in the last file fails fast.

    Args:
        paths: campaign TOML files.
        output_dir: where results go.
        base: override every campaign's ``[target.model] base``.
        progress: ``(stage, done, total)`` callback.

    Raises:
        ConfigError: an invalid campaign file (nothing has run yet).
        SecurePcftError: failures of a run propagate with their types.
    """
    campaigns = [load_campaign(p) for p in paths]
    if any(c.summary for c in campaigns):
        read_summary(output_dir)  # a corrupt summary fails now, not after hours of campaigns
    if base is not None:
        campaigns = [with_base(c, base) for c in campaigns]
    results = []
    for campaign in campaigns:
        result = run_campaign(campaign, progress=progress)
        result.write_json(output_dir)
        results.append(result)
    if any(r.campaign.summary for r in results):
        write_summary(results, output_dir)
    return results
