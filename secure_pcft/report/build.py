"""Build the compliance report of a run: one JSON document (``report.json``) and checks.

The document follows :data:`~secure_pcft.report.schema.REPORT_SCHEMA` (format
``secure-pcft-report/1``); the HTML page is rendered from the document alone
(:func:`~secure_pcft.report.page.render_html`), so both always show the same figures.

Sources: ``results.json`` of the run (config, per-round traffic and trust, fingerprints), each
peer's privacy ledger (verified; the only source of ε), the roster of ``[security] key_dir`` when
there is one, the saved adapters (SHA-256 only), and any audit result files given.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from secure_pcft.config import config_digest
from secure_pcft.crypto.consortium import ROSTER_FILE
from secure_pcft.crypto.roster import Roster
from secure_pcft.errors import PrivacyError, SecurePcftError
from secure_pcft.fileio import json_safe, write_text_atomic
from secure_pcft.model.cache import sha256_file
from secure_pcft.privacy.events import check_peer_id
from secure_pcft.report.audits import audit_checks, load_audit
from secure_pcft.report.checks import Check, Status, verdict
from secure_pcft.report.ledgers import max_epsilon, review_peer, unaccounted_ledgers
from secure_pcft.report.policy import (
    DEFAULT_POLICY,
    ReviewPolicy,
    peer_policy_checks,
    policy_checks,
)
from secure_pcft.report.receipts import held_receipts, receipt_checks
from secure_pcft.report.scope import scope_section
from secure_pcft.report.sources import RunFiles, load_run
from secure_pcft.versions import library_versions

REPORT_FORMAT = "secure-pcft-report/1"


@dataclass(frozen=True)
class Report:
    """A built report: the JSON document and the checks behind its verdict."""

    document: dict[str, Any]
    checks: tuple[Check, ...]

    @property
    def verdict(self) -> Status:
        return verdict(self.checks)

    def to_json(self) -> str:
        return json.dumps(self.document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _adapter(run: RunFiles, peer_id: str) -> dict[str, Any] | None:
    try:
        check_peer_id(peer_id)  # a peer id becomes a path component only if it is file-safe
    except PrivacyError:
        return None
    f = run.run_dir / "adapters" / peer_id / "adapter_model.safetensors"
    if not f.is_file():
        return None
    return {"file": str(f.relative_to(run.run_dir)), "bytes": f.stat().st_size,
            "sha256": sha256_file(f)}  # fmt: skip


def _traffic(run: RunFiles, index: int, peer_id: str) -> dict[str, Any]:
    by_round = [{"round": r.round, "bytes": r.bytes_sent[index], "messages": r.messages_sent[index]}
                for r in run.rounds]  # fmt: skip
    sent_to: Counter[str] = Counter()
    received_from: Counter[str] = Counter()
    declined: Counter[str] = Counter()
    for rnd in run.extra("security").get("rounds", []):
        if not isinstance(rnd, dict):
            continue
        for pair in rnd.get("adapters_sent", []):
            if isinstance(pair, list) and len(pair) == 2:
                if pair[0] == peer_id:
                    sent_to[str(pair[1])] += 1
                if pair[1] == peer_id:
                    received_from[str(pair[0])] += 1
        # a request is declined for lack of consent, or because the budget refused the release
        for pair in [*rnd.get("declined", []), *rnd.get("refused_budget", [])]:
            if isinstance(pair, list) and len(pair) == 2 and pair[0] == peer_id:
                declined[str(pair[1])] += 1
    rejections = run.results.get("rejections", {})
    rejected = rejections.get(peer_id, []) if isinstance(rejections, dict) else []
    return {
        "bytes_sent": sum(r["bytes"] for r in by_round),
        "messages_sent": sum(r["messages"] for r in by_round),
        "by_round": by_round,
        "adapters_sent_to": dict(sorted(sent_to.items())),
        "adapters_received_from": dict(sorted(received_from.items())),
        "adapter_requests_declined": dict(sorted(declined.items())),
        "messages_rejected": len(rejected) if isinstance(rejected, list) else 0,
    }


def _security(
    run: RunFiles, policy: ReviewPolicy
) -> tuple[dict[str, Any], dict[str, str], list[Check]]:
    sec_cfg, info = run.config.security, run.extra("security")
    raw_fp = info.get("fingerprints", {})
    fingerprints = {str(k): str(v) for k, v in raw_fp.items()} if isinstance(raw_fp, dict) else {}
    section: dict[str, Any] = {
        "mode": sec_cfg.mode, "consent": sec_cfg.consent, "key_dir": sec_cfg.key_dir or None,
        "roster": None, "fingerprint_source": "results.json" if fingerprints else None,
        "he_context_bytes": info.get("he_context_bytes"),
        "he_context_messages": info.get("he_context_messages"),
    }  # fmt: skip
    if sec_cfg.mode != "full":
        why = ("[security] mode = off: plain messages, no signatures or encryption; every adapter "
               "is readable by the relay and the network (TM-03, TM-04)")  # fmt: skip
        status: Status = "fail" if policy.security_mode == "full" else "warn"
        return section, fingerprints, [Check("security.mode", "channels are signed and encrypted",
                                             status, why)]  # fmt: skip
    checks = [Check("security.mode", "channels are signed and encrypted", "pass",
                    "[security] mode = full: Ed25519-signed, Box-encrypted envelopes, CKKS "
                    f"discovery, consent = {sec_cfg.consent}")]  # fmt: skip
    if not sec_cfg.key_dir:
        checks.append(Check("security.roster", "peer keys are pinned in a roster file", "warn",
                            "keys were generated in memory for this simulation and discarded; "
                            "the fingerprints are the run's own"))  # fmt: skip
        return section, fingerprints, checks
    roster_file = Path(sec_cfg.key_dir) / ROSTER_FILE
    if not roster_file.is_file():  # e.g. a relative key_dir and another working directory
        checks.append(Check("security.roster", "peer keys are pinned in a roster file", "warn",
                            f"{roster_file} not found from here: fingerprints as the run recorded "
                            "them, not checked against the pins"))  # fmt: skip
        return section, fingerprints, checks
    try:
        roster = Roster.load(roster_file)
    except SecurePcftError as exc:
        checks.append(Check("security.roster", "peer keys are pinned in a roster file", "fail",
                            f"{roster_file}: {exc}"))  # fmt: skip
        return section, fingerprints, checks
    section["roster"] = str(roster_file)
    pinned = {p.name: p.fingerprint for p in roster}
    for peer_id in run.peer_ids:
        got, want = fingerprints.get(peer_id), pinned.get(peer_id)
        ok = want is not None and got == want
        checks.append(Check(f"fingerprint.{peer_id}", f"{peer_id}'s key is the pinned one",
                            "pass" if ok else "fail",
                            f"run {got or 'none'}; roster {want or 'not on the roster'}", peer_id))  # fmt: skip
        if want is not None:
            fingerprints[peer_id] = want
    section["fingerprint_source"] = "roster"
    absent = sorted(set(pinned) - set(run.peer_ids))
    checks.append(Check("roster.accounted", "every pinned peer is accounted for in the results",
                        "fail" if absent else "pass",
                        f"pinned but missing from results.json: {', '.join(absent)}" if absent
                        else f"{len(pinned)} pinned peers, all in results.json"))  # fmt: skip
    return section, fingerprints, checks


def _run_section(run: RunFiles) -> tuple[dict[str, Any], list[Check]]:
    r, cfg = run.results, run.config
    recorded, recomputed = str(r["config_hash"]), config_digest(r["config"])
    checks = [Check("config.hash", "the recorded config hash matches the config",
                    "pass" if recorded == recomputed else "fail",
                    f"recorded {recorded[:16]}…, recomputed {recomputed[:16]}… "
                    "(SHA-256 of the canonical JSON of the config as recorded, which also "
                    "validates under this toolkit)")]  # fmt: skip
    section = {
        "run_dir": str(run.run_dir),
        "results_sha256": run.results_sha256,
        "strategy": r["strategy"],
        "peer_ids": list(run.peer_ids),
        "base_model": str(r.get("base_model", "")),
        "data": str(r.get("data", "")),
        "rounds": max(len(run.rounds) - 1, 0),
        "complete": run.complete,
        "seconds": r.get("seconds") if isinstance(r.get("seconds"), int | float) else None,
        "config_hash": {"recorded": recorded, "recomputed": recomputed,
                        "match": recorded == recomputed},
        "dp_enabled": cfg.privacy.enabled,
        "security_mode": cfg.security.mode,
        "config": cfg.to_dict(),
        "started_at": r.get("started_at") or None,
        "finished_at": r.get("finished_at") or None,
        "versions": {str(k): str(v) for k, v in r.get("versions", {}).items()}
        if isinstance(r.get("versions"), dict) else {},
    }  # fmt: skip
    checks.append(_versions_check(section["versions"]))
    return section, checks


def _versions_check(run_versions: dict[str, str]) -> Check:
    """The libraries that produced the run against those reading it now (a difference is a warning:
    the ledger's ε is recomputed here with this machine's accountant)."""
    cid, title = "versions", "the run's library versions are recorded and match this machine's"
    if not run_versions:
        return Check(cid, title, "warn", "results.json records no library versions (older run)")
    here = library_versions()
    differ = [f"{k} {run_versions[k]} (run) vs {here.get(k, 'absent')} (here)"
              for k in sorted(run_versions) if run_versions[k] != here.get(k)]  # fmt: skip
    if differ:
        return Check(cid, title, "warn", "; ".join(differ))
    return Check(cid, title, "pass", f"{len(run_versions)} versions equal")


def build_report(
    run_dir: str | Path,
    audits: Sequence[str | Path] = (),
    policy: ReviewPolicy = DEFAULT_POLICY,
) -> Report:
    """Gather, verify and summarise a run directory and audit files into a :class:`Report`,
    judged against ``policy`` (:mod:`~secure_pcft.report.policy`): PASS means inside it.

    A ledger that fails verification does not raise: its peer shows no ε and a ``fail`` check
    (the report is the place a reviewer must see it). The verdict is ``fail`` then.

    Raises:
        ReportError: the run directory, its ``results.json`` or an audit file is missing or
            malformed (nothing can be reported).
    """
    run = load_run(run_dir)
    audit_docs = [load_audit(a) for a in audits]
    run_section, checks = _run_section(run)
    checks += policy_checks(policy, run.config)
    security, fingerprints, sec_checks = _security(run, policy)
    peers: list[dict[str, Any]] = []
    final = run.rounds[-1] if run.rounds else None
    if not run.complete:
        checks.append(Check("run.complete", "the run finished and wrote its results", "fail",
                            "no results.json: the run stopped early (interrupted?); the ε its "
                            "peers spent is reported from their verified ledgers, nothing else "
                            "was recorded (run.json holds its configuration)"))  # fmt: skip
    for i, peer_id in enumerate(run.peer_ids):
        privacy, peer_checks = review_peer(run, peer_id)
        checks += peer_checks
        eps = privacy["epsilon_spent"]
        checks += peer_policy_checks(
            policy, peer_id, None if eps is None else float(eps), privacy["delta"],
            _train_blocks(run, peer_id),
        )  # fmt: skip
        peers.append({
            "peer_id": peer_id,
            "fingerprint": fingerprints.get(peer_id),
            "privacy": privacy,
            "traffic": _traffic(run, i, peer_id),
            "final": None if final is None
            else {"test_ppl": final.test_ppl[i], "test_acc": final.test_acc[i]},
            "kept": _kept(run, i),
            "adapter": _adapter(run, peer_id),
        })  # fmt: skip
    renewed = None
    if run.config.privacy.enabled:
        checks += unaccounted_ledgers(run)
        receipts = receipt_checks(run, _roster(run))
        checks += receipts
        held = held_receipts(run)
        status = {c.peer: c.status for c in receipts}
        reported = run.extra("privacy")
        for p in peers:
            pid = p["peer_id"]
            p["receipts"] = {"held_by_partners": len(held.get(pid, [])),
                             "status": status.get(pid)}  # fmt: skip
            own = reported.get(pid) if isinstance(reported, dict) else None
            prior = own.get("epsilon_prior") if isinstance(own, dict) else None
            p["privacy"]["epsilon_prior"] = prior if isinstance(prior, int | float) else None
        extra = run.results.get("extra")
        renewed = (extra.get("new_budget") if isinstance(extra, dict) else None) or run.results.get(
            "new_budget"
        )
        checks.append(Check("budget.renewed", "every peer drew from its data's one budget",
                            "warn" if renewed else "pass",
                            f"a fresh budget was started on data earlier runs spent from "
                            f"(--new-budget): {renewed!s}" if renewed else
                            "no fresh budget was started (earlier runs on the same data count, "
                            "as results.json records per peer: epsilon_prior)"))  # fmt: skip
    checks += sec_checks
    rejected = {p["peer_id"]: p["traffic"]["messages_rejected"] for p in peers}
    if any(rejected.values()):
        checks.append(Check("security.rejections", "no message was rejected", "warn",
                            ", ".join(f"{k}: {v}" for k, v in rejected.items() if v)
                            + " rejected (bad signature, replay, malformed or poisoned adapter)"))  # fmt: skip
    run_eps = max_epsilon(peers)
    for a in audit_docs:
        required = a["campaign"] in policy.required_audits
        checks += audit_checks(
            a, run_eps, str(run.results.get("base_model", "")), required=required,
            run_unit=run.config.privacy.unit if run.config.privacy.enabled else None,
        )  # fmt: skip
    given = {str(a["campaign"]): all(at["passed"] for at in a["attacks"]) for a in audit_docs}
    for name in policy.required_audits:
        ok = given.get(name, False)
        checks.append(Check(f"policy.audit.{name}", f"required audit {name} was given and passed",
                            "pass" if ok else "fail",
                            "given and passed" if ok else ("given, did not pass" if name in given
                            else "not given to the report (--audit)")))  # fmt: skip
    doc = {
        "format": REPORT_FORMAT,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "verdict": verdict(checks),
        "policy": policy.describe(),
        "budget_renewed": None if renewed is None else str(renewed),
        "run": run_section,
        "versions": library_versions(),
        "security": security,
        "peers": peers,
        "trust": {"peer_ids": list(run.peer_ids),
                  "rounds": [{"round": r.round, "matrix": r.trust} for r in run.rounds if r.trust]},
        "audits": audit_docs,
        "checks": [c.to_json() for c in checks],
        "scope": scope_section(run_section["config"], peers,
                               {pid: _train_blocks(run, pid) for pid in run.peer_ids}),
    }  # fmt: skip
    return Report(json_safe(doc), tuple(checks))


def _kept(run: RunFiles, index: int) -> dict[str, Any] | None:
    """The model peer ``index`` keeps against its starting point (results.json ``kept``)."""
    kept = run.results.get("kept")
    k = kept[index] if isinstance(kept, list) and index < len(kept) else None
    if not isinstance(k, dict) or not isinstance(k.get("start"), dict):
        return None
    try:
        return {
            "origin": str(k["origin"]),
            "test_ppl": float(k["test_ppl"]),
            "start_origin": str(k["start"]["origin"]),
            "start_test_ppl": float(k["start"]["test_ppl"]),
            "base_test_ppl": float(k["base_test_ppl"]),
        }
    except (KeyError, TypeError, ValueError):
        return None


def _roster(run: RunFiles) -> Roster | None:
    """The pinned roster of ``[security] key_dir`` when readable from here (else None)."""
    key_dir = run.config.security.key_dir
    if not key_dir or not (Path(key_dir) / ROSTER_FILE).is_file():
        return None
    try:
        return Roster.load(Path(key_dir) / ROSTER_FILE)
    except SecurePcftError:
        return None


def _train_blocks(run: RunFiles, peer_id: str) -> int | None:
    """n of a peer's δ·n: its training units (blocks, documents or subjects) as results.json
    records them (``train_units``; ``train_blocks`` in results from before the unit existed)."""
    info = run.extra("privacy").get(peer_id)
    n = info.get("train_units", info.get("train_blocks")) if isinstance(info, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def write_report(report: Report, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.json`` and the self-contained ``report.html`` into ``out_dir``."""
    from secure_pcft.report.page import render_html

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    json_path, html_path = d / "report.json", d / "report.html"
    write_text_atomic(json_path, report.to_json())
    write_text_atomic(html_path, render_html(report.document))
    return json_path, html_path
