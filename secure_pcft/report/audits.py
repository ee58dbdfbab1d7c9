"""Audit results (``secure-pcft audit`` output) as a report sees them: figures against thresholds.

Each file is one campaign (``audits/results/<name>.json``). The verdict of every threshold is
recomputed here from the recorded metric and the campaign's ``max`` / ``min`` tables rather than
taken from the file's ``passed`` field, and a disagreement is itself a failed check. ROC points are
kept (thinned to at most :data:`MAX_ROC_POINTS`) for the plots; scores and private data never are
(the audit files do not hold them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from secure_pcft.errors import ReportError, SecurePcftError
from secure_pcft.model.cache import base_identity
from secure_pcft.privacy.attack_bounds import tpr_bound_eps_delta
from secure_pcft.report.checks import Check
from secure_pcft.report.sources import read_json, real, require

MAX_ROC_POINTS = 200


def _metric_json(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


def thin_roc(
    points: Sequence[tuple[float, float]], limit: int = MAX_ROC_POINTS
) -> list[list[float]]:
    """Keep the first and last point and an even subset between (the curve's shape survives)."""
    pts = [[float(x), float(y)] for x, y in points]
    if len(pts) <= limit:
        return pts
    step = (len(pts) - 1) / (limit - 1)
    return [pts[round(i * step)] for i in range(limit)]


def _roc(attack: dict[str, Any], where: str) -> list[list[float]]:
    trials = attack.get("per_trial", [])
    if not isinstance(trials, list) or not trials or not isinstance(trials[0], dict):
        return []
    details = trials[0].get("details", {})
    raw = details.get("roc", []) if isinstance(details, dict) else []
    if not isinstance(raw, list):
        raise ReportError(f"{where}.per_trial[0].details.roc: expected a list of [fpr, tpr]")
    points = []
    for i, p in enumerate(raw):
        if not isinstance(p, list) or len(p) != 2:
            raise ReportError(f"{where}.per_trial[0].details.roc[{i}]: expected [fpr, tpr]")
        x, y = real(p[0], f"{where}.roc[{i}][0]"), real(p[1], f"{where}.roc[{i}][1]")
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ReportError(f"{where}.per_trial[0].details.roc[{i}]: rates must be in [0, 1]")
        points.append((x, y))
    return thin_roc(points)


def _thresholds(
    attack: dict[str, Any], metrics: dict[str, float], where: str
) -> list[dict[str, Any]]:
    table = require(attack, "thresholds", dict, where)
    out = []
    for bound in ("max", "min"):
        limits = table.get(bound, {})
        if not isinstance(limits, dict):
            raise ReportError(f"{where}.thresholds.{bound}: expected an object")
        for metric, raw_limit in sorted(limits.items()):
            limit = real(raw_limit, f"{where}.thresholds.{bound}.{metric}")
            value = metrics.get(metric, math.nan)
            ok = not math.isnan(value) and (value <= limit if bound == "max" else value >= limit)
            out.append({"metric": metric, "bound": bound, "limit": _metric_json(limit),
                        "value": _metric_json(value), "passed": ok})  # fmt: skip
    return out


def _attack(raw: Any, index: int, where_file: str) -> dict[str, Any]:
    where = f"{where_file} attacks[{index}]"
    if not isinstance(raw, dict):
        raise ReportError(f"{where}: expected an object")
    label = require(raw, "label", str, where)
    metrics_raw = require(raw, "metrics", dict, where)
    metrics = {str(k): real(v, f"{where}.metrics.{k}") for k, v in metrics_raw.items()}
    tms = raw.get("threat_models", [])
    thresholds = _thresholds(raw, metrics, where)
    return {
        "label": label,
        "name": require(raw, "name", str, where),
        "threat_models": [str(t) for t in tms] if isinstance(tms, list) else [],
        "metrics": {k: _metric_json(v) for k, v in metrics.items()},
        "thresholds": thresholds,
        "passed": all(t["passed"] for t in thresholds),
        "recorded_passed": raw.get("passed") if isinstance(raw.get("passed"), bool) else None,
        "roc": _roc(raw, where),
    }


def campaign_thresholds_match(source: str, attacks: list[dict[str, Any]]) -> bool | None:
    """Whether the thresholds recorded in a result file equal those of its campaign TOML.

    ``source`` is the campaign path the result recorded (relative to where ``secure-pcft audit``
    ran). Returns None when that file cannot be found or loaded here: thresholds are then only as
    recorded.
    """
    from secure_pcft.audit.campaign import load_campaign  # loads the attack registry (torch)

    if not source or not Path(source).is_file():
        return None
    try:
        campaign = load_campaign(source)
    except SecurePcftError:
        return None
    declared = {
        (a.label, bound, metric): float(limit)
        for a in campaign.attacks
        for bound, table in (("max", a.max), ("min", a.min))
        for metric, limit in table.items()
    }
    recorded = {
        (a["label"], t["bound"], t["metric"]): float(t["limit"])
        for a in attacks
        for t in a["thresholds"]
    }
    return declared == recorded


def load_audit(path: str | Path) -> dict[str, Any]:
    """One audit result file as the report's ``audits[]`` entry.

    Raises:
        ReportError: missing or malformed file (the message names the field).
    """
    p = Path(path)
    obj, sha = read_json(p, "audit file")
    where = p.name
    attacks_raw = require(obj, "attacks", list, where)
    if not attacks_raw:
        raise ReportError(f"{where}: no attacks recorded")
    targets = obj.get("targets", [])
    target = (
        targets[0] if isinstance(targets, list) and targets and isinstance(targets[0], dict) else {}
    )
    eps, delta = target.get("epsilon"), target.get("delta")
    tms = obj.get("threat_models", [])
    attacks = [_attack(a, i, where) for i, a in enumerate(attacks_raw)]
    source = str(obj.get("source", ""))
    return {
        "campaign": require(obj, "campaign", str, where),
        "description": str(obj.get("description", "")),
        "file": str(p),
        "sha256": sha,
        "campaign_source": source,
        "campaign_thresholds_match": campaign_thresholds_match(source, attacks),
        "threat_models": [str(t) for t in tms] if isinstance(tms, list) else [],
        "trials": obj.get("trials") if isinstance(obj.get("trials"), int) else None,
        "base_model": str(obj.get("base_model", "")),
        "target_epsilon": None if eps is None else _metric_json(real(eps, f"{where}.targets[0].epsilon")),
        "target_delta": None if delta is None else _metric_json(real(delta, f"{where}.targets[0].delta")),
        "target_peer": str(target.get("peer", "")),
        # the privacy unit its candidates are (audits from before the unit existed: blocks)
        "unit": str(obj.get("unit", target.get("unit", "block"))),
        "attacks": attacks,
        "recorded_passed": obj.get("passed") if isinstance(obj.get("passed"), bool) else None,
        "versions": {str(k): str(v) for k, v in obj.get("versions", {}).items()}
        if isinstance(obj.get("versions"), dict) else {},
    }  # fmt: skip


def _provenance(audit: dict[str, Any]) -> Check:
    name, match, src = (
        audit["campaign"],
        audit["campaign_thresholds_match"],
        audit["campaign_source"],
    )
    cid, title = f"audit.{name}.thresholds", f"audit {name}: thresholds are the campaign's"
    if match is None:
        return Check(cid, title, "warn", f"campaign file {src or '(none recorded)'} not found here: "
                     "thresholds as recorded in the result file")  # fmt: skip
    if match:
        return Check(cid, title, "pass", f"thresholds equal those of {src}")
    return Check(cid, title, "fail", f"the result file's thresholds differ from {src}")


def audit_checks(
    audit: dict[str, Any],
    run_max_epsilon: float | None,
    run_base_model: str = "",
    *,
    required: bool = False,
    run_unit: str | None = None,
) -> list[Check]:
    """One check that the audit measured this run's base model, one per threshold, one if the
    file's own verdict disagrees, one that the thresholds are the campaign file's, a warning if
    the campaign sets no thresholds at all, one on ε coverage.

    Only an audit the review policy ``required`` counts towards the verdict; the others are
    evidence (an audit measures its own target, not this run's adapters). A threshold that asks
    an attack to *succeed* on a target without DP is a positive control and never counts."""
    name = audit["campaign"]
    out = [_same_base(audit, run_base_model), _provenance(audit)]
    if run_unit is not None:
        same = audit["unit"] == run_unit
        out.append(Check(f"audit.{name}.unit", f"audit {name} measured the run's privacy unit",
                         "pass" if same else "warn",
                         f"both in {run_unit}s" if same else
                         f"the audit's candidates are {audit['unit']}s, the run protects "
                         f"{run_unit}s: its figures are not in the unit this run's ε covers"))  # fmt: skip
    control_target = audit["target_epsilon"] in (None, "inf")
    for a in audit["attacks"]:
        for t in a["thresholds"]:
            op = "≤" if t["bound"] == "max" else "≥"
            control = control_target and t["bound"] == "min"
            prefix = "positive control (an attack that should succeed), " if control else ""
            out.append(Check(f"{'control' if control else 'audit'}.{name}.{a['label']}.{t['metric']}",
                             f"{prefix}audit {name}: {a['label']} {t['metric']} {op} "
                             f"{_fmt(t['limit'])}",
                             "pass" if t["passed"] else "fail",
                             f"measured {t['metric']} = {_fmt(t['value'])} ({a['name']})",
                             counts=required and not control))  # fmt: skip
        if a["recorded_passed"] is not None and a["recorded_passed"] != a["passed"]:
            out.append(Check(f"audit.{name}.{a['label']}.recorded",
                             f"audit {name}: the file's verdict for {a['label']} holds", "fail",
                             "the file says passed = "
                             f"{a['recorded_passed']}, its own figures say {a['passed']}"))  # fmt: skip
    if not any(a["thresholds"] for a in audit["attacks"]):
        out.append(Check(f"audit.{name}.judged", f"audit {name} sets thresholds", "warn",
                         "the campaign sets no thresholds: its figures are measured, not "
                         "judged, and no check here rests on them"))  # fmt: skip
    out.append(_coverage(audit, run_max_epsilon))
    bound_checks = _tpr_bound_checks(audit)  # a broken mechanism counts, required or not
    if required:
        return out + bound_checks
    return [Check(c.id, c.title, c.status, c.detail, c.peer, counts=False) for c in out] + (
        bound_checks
    )


def _tpr_bound_checks(audit: dict[str, Any]) -> list[Check]:
    """Each measured TPR at FPR 1 % / 0.1 % against the bound its target's (ε, δ) implies
    (privacy/attack_bounds.py). A TPR whose confidence interval lies above the bound means the
    mechanism or the accountant is broken: that fails whichever audit it is."""
    name, eps, delta = audit["campaign"], audit["target_epsilon"], audit.get("target_delta")
    if eps in (None, "inf") or delta is None:
        return []
    out = []
    for a in audit["attacks"]:
        m = a["metrics"]
        for fpr, key in ((0.01, "tpr_at_1pct_fpr"), (0.001, "tpr_at_0.1pct_fpr")):
            if key not in m or isinstance(m[key], str):
                continue
            # with n non-members the smallest FPR a threshold can reach is 1/n: the measured
            # "TPR at FPR 0.1 %" is a TPR at that resolution, and is judged there
            resolution = m.get("fpr_resolution", 0.0)
            at = max(fpr, float(resolution) if not isinstance(resolution, str) else 0.0)
            bound = tpr_bound_eps_delta(float(eps), float(delta), at)
            low = m.get(f"{key}_ci_low", m[key])
            low = float(low) if not isinstance(low, str) else float("nan")
            ok = not low > bound
            out.append(Check(f"audit.{name}.{a['label']}.tpr_bound.{fpr:g}",
                             f"audit {name}: {a['label']} TPR at FPR {fpr:g} within what ε "
                             f"{float(eps):.3g} allows", "pass" if ok else "fail",
                             f"measured {_fmt(m[key])} (95 % CI low {_fmt(low)}), at most "
                             f"{bound:.4g} at FPR {at:.3g} for (ε, δ) = "
                             f"({float(eps):.3g}, {float(delta):.2g})"))  # fmt: skip
    return out


def _same_base(audit: dict[str, Any], run_base_model: str) -> Check:
    """An audit measured on another base model says nothing about this run's adapters."""
    name = audit["campaign"]
    cid, title = f"audit.{name}.base_model", f"audit {name} was measured on this run's base model"
    ours, theirs = base_identity(run_base_model), base_identity(audit["base_model"])
    if not ours or not theirs:
        return Check(cid, title, "warn", "the run or the audit file records no base model")
    if ours == theirs:
        return Check(cid, title, "pass", f"both on {ours}")
    return Check(cid, title, "fail", f"audit measured on {theirs}, this run used {ours}")


def _fmt(x: float | str) -> str:
    return x if isinstance(x, str) else f"{x:.4g}"


def _coverage(audit: dict[str, Any], run_max_epsilon: float | None) -> Check:
    name, eps = audit["campaign"], audit["target_epsilon"]
    cid = f"audit.{name}.coverage"
    if run_max_epsilon is None:
        return Check(cid, f"audit {name}: this run has no verified ε to compare it with", "warn",
                     "the run has no verified ε to compare with")  # fmt: skip
    target = math.inf if eps in (None, "inf") else float(eps)
    detail = (f"audited target ε = {target:.4g}; this run's peers spent up to "
              f"ε = {run_max_epsilon:.4g}")  # fmt: skip
    if target >= run_max_epsilon:
        return Check(cid, f"audit {name} was measured at this run's ε or above", "pass", detail)
    return Check(cid, f"audit {name} was measured at a smaller ε than this run spent", "warn",
                 detail + ": the audit measured a more private model than this run released")  # fmt: skip
