"""Each peer's privacy ledger as a report sees it: verified, recomputed, summarised (TM-06, TM-07).

The ledger is the only source of ε in the report. It is read with
:func:`~secure_pcft.privacy.ledger.read_ledger`, which verifies the hash chain and the high-water
mark; ε is recomputed from the verified events with the ledger's own accountant and δ, per round
and in total, and compared with what ``results.json`` claims. A ledger that fails verification is
never summarised: its peer gets no ε figures (``null``) and a ``fail`` check carrying the error, so
the report's verdict is ``fail`` (it is still written, so that a reviewer sees what is wrong).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from secure_pcft.errors import LedgerError, PrivacyError
from secure_pcft.privacy.accounting import epsilon_spent
from secure_pcft.privacy.attack_bounds import FPRS, gaussian_mu, tpr_bound
from secure_pcft.privacy.events import DpEvent, check_peer_id
from secure_pcft.privacy.ledger import LedgerContents, ledger_path, read_ledger
from secure_pcft.report.checks import Check
from secure_pcft.report.sources import RunFiles

_REL_TOL = 1e-6


def find_ledger(run: RunFiles, peer_id: str) -> Path | None:
    """The peer's ledger file among the run's ledger folders, or None."""
    try:
        name = ledger_path(".", peer_id).name
    except PrivacyError:
        return None
    for candidate in run.ledger_candidates(name):
        if candidate.is_file():
            return candidate
    return None


def mechanisms(events: tuple[DpEvent, ...]) -> list[dict[str, Any]]:
    """Events grouped by (mechanism, σ, q): how many, steps composed, what they released."""
    groups: dict[tuple[str, float, float], dict[str, Any]] = {}
    for e in events:
        g = groups.setdefault(
            (e.mechanism, e.noise_multiplier, e.sample_rate),
            {"mechanism": e.mechanism, "noise_multiplier": e.noise_multiplier,
             "sample_rate": e.sample_rate, "events": 0, "steps": 0, "released": Counter()},
        )  # fmt: skip
        g["events"] += 1
        g["steps"] += e.steps
        g["released"][e.released] += 1
    return [{**g, "released": dict(sorted(g["released"].items()))} for g in groups.values()]


def releases(events: tuple[DpEvent, ...]) -> list[dict[str, Any]]:
    """Count of releases per (what, recipient), from the ledger."""
    n: Counter[tuple[str, str]] = Counter()
    for e in events:
        for r in e.recipients or ("(local)",):
            n[(e.released, r)] += 1
    return [{"released": k, "recipient": r, "count": c} for (k, r), c in sorted(n.items())]


def epsilon_by_round(contents: LedgerContents, last_round: int) -> list[dict[str, Any]]:
    """ε after every event of rounds ≤ r, for r = 0 … ``last_round`` (recomputed per prefix)."""
    g, events = contents.genesis, contents.events
    out = []
    for r in range(last_round + 1):
        prefix = [e for e in events if e.round <= r]
        out.append({"round": r, "epsilon": _json_eps(epsilon_spent(prefix, g.delta, g.accountant))})
    return out


def _json_eps(eps: float) -> float | str:
    return eps if math.isfinite(eps) else "inf"


def _recorded_epsilon(run: RunFiles, peer_id: str) -> float | None:
    info = run.extra("privacy").get(peer_id)
    value = info.get("epsilon_spent") if isinstance(info, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if value == "inf":
        return math.inf
    return None


def _attack_bounds(events: tuple[DpEvent, ...], accountant: str) -> dict[str, Any]:
    """What the ledger's ε means for an attacker: GDP μ (exact when no event is subsampled) and
    the largest membership-test TPR at FPR 1 % and 0.1 % (privacy/attack_bounds.py)."""
    mu, exact = gaussian_mu(events)
    return {
        "mu": _json_eps(mu),
        "mu_exact": exact,
        "tpr_bounds": {f"{fpr:g}": tpr_bound(events, accountant, fpr) for fpr in FPRS},
    }


def _empty(enabled: bool, status: str, path: Path | None, error: str | None) -> dict[str, Any]:
    return {
        "enabled": enabled,
        "ledger": {"path": None if path is None else str(path), "status": status, "error": error,
                   "events": 0, "head_hash": None},
        "epsilon_spent": None, "budget_epsilon": None, "delta": None, "accountant": None,
        "unit": None, "epsilon_by_round": [], "mechanisms": [], "releases": [], "stopped_sharing_round": None,
        "mu": None, "mu_exact": None, "tpr_bounds": None,
    }  # fmt: skip


def review_peer(run: RunFiles, peer_id: str) -> tuple[dict[str, Any], list[Check]]:
    """The ``privacy`` section of one peer and its checks (ledger integrity, budget, agreement).

    Returns:
        (section, checks). Without DP the section says so and no check is returned: whether a run
        without DP is acceptable is the review policy's call (``policy.dp``), made once per run.
    """
    cid, title = f"ledger.{peer_id}", f"privacy ledger of {peer_id} verifies"
    if not run.config.privacy.enabled:
        return _empty(False, "not-applicable", None, None), []
    try:
        check_peer_id(peer_id)
    except PrivacyError as exc:
        return _empty(True, "missing", None, str(exc)), [
            Check(cid, title, "fail", str(exc), peer_id)
        ]
    path = find_ledger(run, peer_id)
    if path is None:
        why = "no ledger found (looked in <run>/ledgers and [privacy] ledger_dir)"
        return _empty(True, "missing", None, why), [Check(cid, title, "fail", why, peer_id)]
    try:
        contents = read_ledger(path)
        if contents.genesis.peer_id != peer_id:
            raise LedgerError(f"{path.name}: genesis names peer {contents.genesis.peer_id!r}")
    except LedgerError as exc:
        why = f"TAMPERED OR CORRUPT — {exc}"
        return _empty(True, "fail", path, str(exc)), [Check(cid, title, "fail", why, peer_id)]
    return _summarise(run, peer_id, path, contents)


def _summarise(
    run: RunFiles, peer_id: str, path: Path, contents: LedgerContents
) -> tuple[dict[str, Any], list[Check]]:
    g, events = contents.genesis, contents.events
    eps = epsilon_spent(events, g.delta, g.accountant)
    last_round = max([0] + [r.round for r in run.rounds] + [e.round for e in events])
    info = run.extra("privacy").get(peer_id, {})
    stopped = info.get("stopped_sharing_round") if isinstance(info, dict) else None
    section = {
        "enabled": True,
        "ledger": {"path": str(path), "status": "verified", "error": None,
                   "events": len(events), "head_hash": contents.head.hash},
        "epsilon_spent": _json_eps(eps), "budget_epsilon": g.budget_epsilon, "delta": g.delta,
        "accountant": g.accountant, "unit": g.unit,
        "epsilon_by_round": epsilon_by_round(contents, last_round),
        "mechanisms": mechanisms(events), "releases": releases(events),
        "stopped_sharing_round": stopped if isinstance(stopped, int) else None,
        **_attack_bounds(events, g.accountant),
    }  # fmt: skip
    head = contents.head
    checks = [
        Check(f"ledger.{peer_id}", f"privacy ledger of {peer_id} verifies", "pass",
              f"hash chain and high-water mark verified: {len(events)} events, head "
              f"{head.hash[:16]}…", peer_id),
    ]  # fmt: skip
    shown = f"ε = {eps:.4g} at δ = {g.delta:.3g} ({g.accountant})"
    if g.budget_epsilon is None:
        checks.append(Check(f"budget.{peer_id}", f"{peer_id} stays within its ε budget", "warn",
                            f"{shown}; no budget set, nothing stops sharing", peer_id))  # fmt: skip
    else:
        ok = eps <= g.budget_epsilon * (1 + _REL_TOL)
        checks.append(Check(f"budget.{peer_id}", f"{peer_id} stays within its ε budget",
                            "pass" if ok else "fail",
                            f"{shown} of budget {g.budget_epsilon:g}", peer_id))  # fmt: skip
    recorded = _recorded_epsilon(run, peer_id)
    if recorded is None:
        checks.append(Check(f"agree.{peer_id}", f"{peer_id}: results.json agrees with the ledger", "warn",
                            "results.json records no ε for this peer", peer_id))  # fmt: skip
    else:
        same = math.isclose(recorded, eps, rel_tol=_REL_TOL, abs_tol=1e-12) or recorded == eps
        checks.append(Check(f"agree.{peer_id}", f"{peer_id}: results.json agrees with the ledger",
                            "pass" if same else "fail",
                            f"results.json ε = {recorded:.6g}, ledger ε = {eps:.6g}", peer_id))  # fmt: skip
    return section, checks


def max_epsilon(peers: list[dict[str, Any]]) -> float | None:
    """Largest verified ε over the peers' sections (None if none is verified)."""
    values = [p["privacy"]["epsilon_spent"] for p in peers]
    nums = [math.inf if v == "inf" else float(v) for v in values if v is not None]
    return max(nums) if nums else None


def unaccounted_ledgers(run: RunFiles) -> list[Check]:
    """Every ledger file in the run's ledger folders must belong to a peer of ``results.json``:
    a peer erased from the results but whose ledger is still there (perhaps over budget) fails
    the report instead of vanishing from it (TM-06)."""
    peers = set(run.peer_ids)
    found: dict[str, Path] = {}
    for folder in {c.parent for c in run.ledger_candidates("x.ledger.jsonl")}:
        if folder.is_dir():
            for f in sorted(folder.glob("*.ledger.jsonl")):
                found.setdefault(f.name.removesuffix(".ledger.jsonl"), f)
    extra = {k: v for k, v in found.items() if k not in peers}
    title = "every ledger in the run's ledger folders belongs to a peer of the results"
    if not extra:
        return [Check("ledgers.accounted", title, "pass",
                      f"{len(found)} ledger files, all of peers in results.json")]  # fmt: skip
    return [Check("ledgers.accounted", title, "fail",
                  "ledgers of peers missing from results.json: "
                  + ", ".join(f"{k} ({v})" for k, v in sorted(extra.items())))]  # fmt: skip
