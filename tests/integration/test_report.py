"""Compliance report end to end: a real DP run with pinned keys, its ledgers, audit files, the JSON
schema, tampering, escaping, the CLI, and the HTML page rendered by a real headless Chromium."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import struct
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from secure_pcft.cli import main
from secure_pcft.collab.strategy import make_strategy
from secure_pcft.config import (
    DataConfig,
    OutputConfig,
    PrivacyConfig,
    RunConfig,
    SecurityConfig,
    StrategyConfig,
    TrainConfig,
    config_from_dict,
)
from secure_pcft.crypto.consortium import Consortium
from secure_pcft.errors import ConfigError, ReportError
from secure_pcft.model.loading import load_base
from secure_pcft.privacy.accounting import epsilon_spent
from secure_pcft.privacy.ledger import PrivacyLedger, ledger_path, read_ledger
from secure_pcft.report import REPORT_SCHEMA, build_report, render_html, write_report
from secure_pcft.report.policy import DEFAULT_POLICY, ReviewPolicy, load_policy, policy_checks
from secure_pcft.report.schema import schema_json
from secure_pcft.runtime.loopback import Simulation
from tests.conftest import quick_strategy, tiny_federation

ROOT = Path(__file__).resolve().parents[2]
MIA_DP = ROOT / "audits" / "results" / "mia-dp.json"
MIA_NONDP = ROOT / "audits" / "results" / "mia-nondp.json"
TRAIN = TrainConfig(
    batch_size=4, lr=5e-3, warmup_steps=2, local_steps=2, total_steps=8, eval_batches=2
)
CHROMIUM = Path("/usr/bin/chromium")


def _run(root: Path, base_dir: Path, privacy: PrivacyConfig, security: SecurityConfig) -> Path:
    cfg = RunConfig(
        data=DataConfig(block_size=16),
        train=TRAIN,
        strategy=quick_strategy("weights"),
        privacy=privacy,
        security=security,
        output=OutputConfig(dir=str(root / "out")),
    )
    sim = Simulation(cfg, tiny_federation(), load_base(base_dir))
    try:
        sim.warmup()
        strategy = make_strategy(cfg.strategy)
        sim.run_rounds(strategy)
        sim.result(strategy, 1.0).write_json(root / "out" / "results.json")
    finally:
        sim.close()
    return root / "out"


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory: pytest.TempPathFactory, tiny_base_dir: Path) -> Path:
    """A 3-peer DP-SGD run (budget 50) with signed+encrypted channels and a roster on disk."""
    root = tmp_path_factory.mktemp("dp-run")
    Consortium.create(root / "keys", [f"peer-{i}" for i in range(3)])
    return _run(
        root,
        tiny_base_dir,
        # inside the default review policy: ε ≤ 10, δ·n ≤ 0.1, OS noise, full security
        PrivacyConfig(
            enabled=True, noise_multiplier=1.0, budget_epsilon=50.0, delta=1e-4, secure_rng=True
        ),
        SecurityConfig(mode="full", key_dir=str(root / "keys"), select_top_k=1),
    )


def _copy(run: Path, tmp: Path) -> Path:
    return Path(shutil.copytree(run, tmp / "copy"))


def _checks(report: Any) -> dict[str, str]:
    return {c.id: c.status for c in report.checks}


# ----------------------------------------------------------------------------- contents


def test_report_recomputes_every_peers_epsilon_from_its_verified_ledger(dp_run: Path) -> None:
    report = build_report(dp_run)
    doc = report.document

    assert report.verdict == "pass", [c for c in report.checks if c.status == "fail"]
    assert doc["run"]["config_hash"]["match"] is True
    results = json.loads((dp_run / "results.json").read_text())
    for peer in doc["peers"]:
        contents = read_ledger(ledger_path(dp_run / "ledgers", peer["peer_id"]))
        g = contents.genesis
        eps = epsilon_spent(contents.events, g.delta, g.accountant)
        privacy = peer["privacy"]
        assert privacy["ledger"]["status"] == "verified"
        assert privacy["epsilon_spent"] == pytest.approx(eps)
        assert privacy["epsilon_spent"] == pytest.approx(
            results["extra"]["privacy"][peer["peer_id"]]["epsilon_spent"]
        )
        assert (privacy["budget_epsilon"], privacy["delta"]) == (50.0, g.delta)
        by_round = [e["epsilon"] for e in privacy["epsilon_by_round"]]
        assert by_round == sorted(by_round) and by_round[-1] == pytest.approx(eps)
        assert len(by_round) == TRAIN.num_rounds + 1
        # every DP-SGD step of the run is in the mechanisms table
        assert sum(m["steps"] for m in privacy["mechanisms"]) == TRAIN.total_steps
        assert all(m["noise_multiplier"] == 1.0 for m in privacy["mechanisms"])
        assert _checks(report)[f"budget.{peer['peer_id']}"] == "pass"


def test_report_says_what_was_sent_to_whom_and_pins_fingerprints(dp_run: Path) -> None:
    doc = build_report(dp_run).document
    results = json.loads((dp_run / "results.json").read_text())
    pairs = [tuple(p) for r in results["extra"]["security"]["rounds"] for p in r["adapters_sent"]]
    roster = Consortium.load(Path(doc["security"]["key_dir"]), results["peer_ids"])

    assert doc["security"]["fingerprint_source"] == "roster"
    for i, peer in enumerate(doc["peers"]):
        pid, traffic = peer["peer_id"], peer["traffic"]
        assert peer["fingerprint"] == roster.fingerprints()[pid]
        assert traffic["bytes_sent"] == sum(r["bytes_sent"][i] for r in results["rounds"])
        assert sum(traffic["adapters_sent_to"].values()) == sum(1 for s, _ in pairs if s == pid)
        # the ledger recorded one adapter release per adapter actually sent
        ledger_adapters = sum(
            r["count"] for r in peer["privacy"]["releases"] if r["released"] == "adapter"
        )
        assert ledger_adapters == sum(traffic["adapters_sent_to"].values())
    assert [r["round"] for r in doc["trust"]["rounds"]] == list(range(1, TRAIN.num_rounds + 1))


def test_report_json_validates_against_the_documented_schema(dp_run: Path, tmp_path: Path) -> None:
    report = build_report(dp_run, [MIA_DP, MIA_NONDP])
    json_path, _ = write_report(report, tmp_path)
    doc = json.loads(json_path.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(
        REPORT_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )

    validator.validate(doc)
    assert len(doc["audits"]) == 2 and doc["audits"][0]["attacks"][0]["roc"]
    assert doc["budget_renewed"] is None  # no --new-budget
    registered = json.loads(json.dumps(doc))  # a plugin's accountant name is a valid report too
    registered["peers"][0]["privacy"]["accountant"] = "my-accountant"
    validator.validate(registered)
    receipts = [p["receipts"] for p in doc["peers"]]
    assert any(r["held_by_partners"] > 0 and r["status"] == "pass" for r in receipts)
    assert all(p["privacy"]["epsilon_prior"] == 0 for p in doc["peers"])  # no earlier run
    # the schema has teeth: each of these breaks it
    for path, value in [
        (("verdict",), "maybe"),
        (("peers", 0, "privacy", "ledger", "status"), "ok"),
        (("checks", 0, "status"), "PASS"),
        (("audits", 0, "attacks", 0, "roc", 0), [0.5, 1.5]),
        (("run", "results_sha256"), "not-a-hash"),
    ]:
        bad = copy.deepcopy(doc)
        target = bad
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        assert not validator.is_valid(bad), path
    extra = copy.deepcopy(doc)
    extra["peers"][0]["secret"] = "x"
    assert not validator.is_valid(extra)


def test_docs_schema_file_is_the_packaged_schema() -> None:
    assert (ROOT / "docs" / "report.schema.json").read_text(encoding="utf-8") == schema_json()


# ----------------------------------------------------------------------------- tampering


def _edit_line(path: Path, index: int, old: str, new: str) -> None:
    lines = path.read_text().splitlines()
    assert old in lines[index]
    lines[index] = lines[index].replace(old, new, 1)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("tamper", ["edit", "truncate", "delete"])
def test_a_tampered_ledger_fails_the_report_prominently(
    dp_run: Path, tmp_path: Path, tamper: str
) -> None:
    run = _copy(dp_run, tmp_path)
    path = ledger_path(run / "ledgers", "peer-1")
    if tamper == "edit":  # spend fewer steps than were taken
        _edit_line(path, 1, '"steps":', '"steps":0,"x":')
    elif tamper == "truncate":  # cut the last release
        path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    else:
        path.unlink()

    report = build_report(run)
    peer = report.document["peers"][1]
    html = render_html(report.document)

    assert report.verdict == "fail"
    assert _checks(report)["ledger.peer-1"] == "fail"
    assert _checks(report)["ledger.peer-0"] == "pass"
    assert peer["privacy"]["epsilon_spent"] is None  # never an ε from an unverified ledger
    assert peer["privacy"]["ledger"]["status"] == ("missing" if tamper == "delete" else "fail")
    assert 'class="alert">LEDGER FAILED — peer-1' in html
    assert 'id="verdict" class="verdict v-fail">Verdict: FAIL' in html
    assert main(["report", str(run), "--out", str(tmp_path / "r")]) == 1


@pytest.mark.parametrize("what", ["epsilon", "config"])
def test_results_that_disagree_with_ledger_or_config_fail(
    dp_run: Path, tmp_path: Path, what: str
) -> None:
    run = _copy(dp_run, tmp_path)
    results = json.loads((run / "results.json").read_text())
    if what == "epsilon":
        results["extra"]["privacy"]["peer-2"]["epsilon_spent"] *= 0.5
    else:
        results["config"]["train"]["lr"] = 1e-3  # hash no longer matches
    (run / "results.json").write_text(json.dumps(results))

    report = build_report(run)

    assert report.verdict == "fail"
    failed = {c.id for c in report.checks if c.status == "fail"}
    assert failed == ({"agree.peer-2"} if what == "epsilon" else {"config.hash"})


def test_an_older_runs_config_hash_still_checks_after_the_toolkit_gained_a_field(
    dp_run: Path, tmp_path: Path
) -> None:
    """A run recorded by an older toolkit lacks a config field added since (here ``[privacy]
    unit``, whose default it meant); its recorded hash is of the config as written then, so the
    check hashes the recorded table, not today's re-validated config (which has the new field)."""
    from secure_pcft.config import config_digest

    run = _copy(dp_run, tmp_path)
    results = json.loads((run / "results.json").read_text())
    del results["config"]["privacy"]["unit"]
    results["config_hash"] = config_digest(results["config"])  # what the older toolkit wrote
    (run / "results.json").write_text(json.dumps(results))
    assert config_from_dict(results["config"]).digest() != results["config_hash"]

    checks = _checks(build_report(run))

    assert checks["config.hash"] == "pass"


def test_fingerprints_are_checked_against_the_roster(dp_run: Path, tmp_path: Path) -> None:
    run = _copy(dp_run, tmp_path)
    results = json.loads((run / "results.json").read_text())
    results["extra"]["security"]["fingerprints"]["peer-0"] = "0" * 32  # a substituted key
    (run / "results.json").write_text(json.dumps(results))
    moved = copy.deepcopy(results)
    moved["config"]["security"]["key_dir"] = str(tmp_path / "elsewhere")
    moved["config_hash"] = config_from_dict(moved["config"]).digest()
    other = tmp_path / "moved"
    shutil.copytree(run, other)
    (other / "results.json").write_text(json.dumps(moved))

    substituted = _checks(build_report(run))
    unpinned = _checks(build_report(other))

    assert substituted["fingerprint.peer-0"] == "fail"
    assert substituted["fingerprint.peer-1"] == "pass"
    assert unpinned["security.roster"] == "warn"  # cannot check from here: said, not failed
    assert not any(k.startswith("fingerprint.") for k in unpinned)


def test_audit_thresholds_are_recomputed_not_trusted(
    dp_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # the result files name their campaign relative to the repository
    audit = json.loads(MIA_DP.read_text())
    audit["attacks"][0]["metrics"]["roc_auc"] = (
        0.9  # above its max 0.65; the file still says passed
    )
    forged = tmp_path / "mia-dp.json"
    forged.write_text(json.dumps(audit))

    checks = _checks(build_report(dp_run, [forged]))
    genuine = _checks(build_report(dp_run, [MIA_DP]))

    assert checks["audit.mia-dp.loss.roc_auc"] == "fail"
    assert checks["audit.mia-dp.loss.recorded"] == "fail"
    assert genuine["audit.mia-dp.loss.roc_auc"] == "pass"
    assert "audit.mia-dp.loss.recorded" not in genuine
    # the DP audit's target (ε ≈ 1) is more private than this run (ε ≈ 3.9): flagged, not failed
    assert genuine["audit.mia-dp.coverage"] == "warn"
    assert genuine["audit.mia-dp.thresholds"] == "pass"  # equal to audits/mia_dp.toml


def test_thresholds_loosened_in_a_result_file_fail(
    dp_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    audit = json.loads(MIA_DP.read_text())
    audit["attacks"][2]["thresholds"]["max"]["roc_auc"] = 0.99  # campaign says 0.65
    forged = tmp_path / "mia-dp.json"
    forged.write_text(json.dumps(audit))
    audit["source"] = "audits/nowhere.toml"
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps(audit))

    assert _checks(build_report(dp_run, [forged]))["audit.mia-dp.thresholds"] == "fail"
    assert _checks(build_report(dp_run, [unknown]))["audit.mia-dp.thresholds"] == "warn"


def test_an_audit_without_thresholds_is_flagged_not_counted_as_passed(
    dp_run: Path, tmp_path: Path
) -> None:
    audit = json.loads(MIA_DP.read_text())
    for attack in audit["attacks"]:
        attack["thresholds"] = {"max": {}, "min": {}}
        attack["passed"] = None
    audit["passed"] = None
    unjudged = tmp_path / "mia-dp.json"
    unjudged.write_text(json.dumps(audit))

    checks = _checks(build_report(dp_run, [unjudged]))
    genuine = _checks(build_report(dp_run, [MIA_DP]))

    assert checks["audit.mia-dp.judged"] == "warn"
    assert not any(k.startswith("audit.mia-dp.loss.") and ".tpr_bound." not in k for k in checks)
    assert "audit.mia-dp.judged" not in genuine


def test_a_run_without_dp_fails_and_plain_channels_are_flagged(
    tmp_path: Path, tiny_base_dir: Path
) -> None:
    run = _run(tmp_path, tiny_base_dir, PrivacyConfig(), SecurityConfig())

    report = build_report(run)
    checks = _checks(report)

    assert report.verdict == "fail"
    assert checks["policy.dp"] == "fail"  # once for the run, not a "ledger FAIL" per peer
    assert not any(k.startswith(("ledger.", "dp.peer")) for k in checks)
    assert checks["security.mode"] == "fail"  # the default policy requires full mode
    assert all(p["privacy"]["epsilon_spent"] is None for p in report.document["peers"])
    page = render_html(report.document)
    assert 'id="plot-trust-final"' in page
    assert "NOT-APPLICABLE" not in page and "(no DP: no ledger)" in page  # no red FAIL per peer
    lenient = ReviewPolicy(name="simulation review", require_dp=False, security_mode="off")
    relaxed = _checks(build_report(run, policy=lenient))
    assert "policy.dp" not in relaxed and relaxed["security.mode"] == "warn"


# ----------------------------------------------------------------------------- the policy


def test_the_report_names_its_policy_and_its_hash(dp_run: Path, tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text('[policy]\nname = "plant review 2026"\nmax_epsilon = 4.0\n')

    doc = build_report(dp_run).document
    strict = build_report(dp_run, policy=load_policy(policy_file))

    assert doc["policy"]["sha256"] == DEFAULT_POLICY.digest()
    assert strict.document["policy"]["name"] == "plant review 2026"
    assert strict.document["policy"]["sha256"] != DEFAULT_POLICY.digest()
    eps = max(float(p["privacy"]["epsilon_spent"]) for p in doc["peers"])
    want = "fail" if eps > 4.0 else "pass"
    assert _checks(strict)["policy.epsilon.peer-0"] in {want, "pass"}
    assert "plant review 2026" in render_html(strict.document)
    code = main(["report", str(dp_run), "--policy", str(policy_file), "--out", str(tmp_path / "r")])
    assert code == (1 if strict.verdict == "fail" else 0)


def test_an_epsilon_above_the_policy_fails(dp_run: Path) -> None:
    eps = max(float(p["privacy"]["epsilon_spent"]) for p in build_report(dp_run).document["peers"])
    strict = ReviewPolicy(name="strict", max_epsilon=eps / 2)

    report = build_report(dp_run, policy=strict)

    assert report.verdict == "fail"
    assert "fail" in {_checks(report)[f"policy.epsilon.peer-{i}"] for i in range(3)}


def test_a_delta_too_large_for_the_data_or_a_required_audit_not_given_fails(dp_run: Path) -> None:
    genuine = _checks(build_report(dp_run))
    assert all(genuine[f"policy.delta.peer-{i}"] == "pass" for i in range(3))
    # dp_run's δ is 1e-4, so δ·n ≥ 1e-4 for every peer: a policy of δ·n ≤ 1e-6 fails them all
    tight = ReviewPolicy(name="tight delta", max_delta_times_n=1e-6)
    report = build_report(dp_run, policy=tight)
    assert report.verdict == "fail"
    assert all(_checks(report)[f"policy.delta.peer-{i}"] == "fail" for i in range(3))

    wants_audit = ReviewPolicy(name="audited", required_audits=("mia-dp",))
    checks = {c.id: c for c in build_report(dp_run, policy=wants_audit).checks}
    missing = [c for c in checks.values() if c.status == "fail" and "mia-dp" in c.id]
    assert missing and "not given to the report" in missing[0].detail


def test_an_unsafe_switch_fails_the_report_in_red() -> None:
    from secure_pcft.config import RunConfig

    cfg = RunConfig(privacy=PrivacyConfig(enabled=True, noise_multiplier=0.0,
                                          unsafe_zero_noise=True, secure_rng=True))  # fmt: skip
    unsafe = [c for c in policy_checks(DEFAULT_POLICY, cfg) if c.id == "policy.unsafe"]
    assert [c.status for c in unsafe] == ["fail"] and "unsafe_zero_noise" in unsafe[0].detail
    safe = RunConfig(privacy=PrivacyConfig(enabled=True, noise_multiplier=1.0, secure_rng=True))
    assert not [c for c in policy_checks(DEFAULT_POLICY, safe) if c.id == "policy.unsafe"]


def test_no_noise_fails_the_report(dp_run: Path, tmp_path: Path) -> None:
    """σ = 0 everywhere (config refused, so forged into the ledgers with a rewritten chain): ε = ∞
    must fail the report whatever else agrees."""
    run = _copy(dp_run, tmp_path)
    for i in range(3):
        path = ledger_path(run / "ledgers", f"peer-{i}")
        contents = read_ledger(path)
        path.unlink()
        path.with_name(path.name + ".head").unlink()  # a consistent rewrite of chain and head
        forged = PrivacyLedger.open(
            path, peer_id=f"peer-{i}", delta=contents.genesis.delta, budget_epsilon=None,
            accountant=contents.genesis.accountant,
        )  # fmt: skip
        forged.append([replace(e, noise_multiplier=0.0) for e in contents.events])
        forged.close()
    results = json.loads((run / "results.json").read_text())
    for info in results["extra"]["privacy"].values():
        info["epsilon_spent"] = "inf"
    (run / "results.json").write_text(json.dumps(results))

    report = build_report(run)
    checks = _checks(report)

    assert report.verdict == "fail"
    assert {checks[f"policy.epsilon.peer-{i}"] for i in range(3)} == {"fail"}


def test_an_erased_peer_fails_the_report(dp_run: Path, tmp_path: Path) -> None:
    run = _copy(dp_run, tmp_path)
    results = json.loads((run / "results.json").read_text())
    gone = results["peer_ids"].index("peer-2")
    results["peer_ids"].pop(gone)
    for r in results["rounds"]:
        for key in ("test_ppl", "test_acc", "bytes_sent", "messages_sent"):
            r[key].pop(gone)
        r["trust"] = [row[:gone] + row[gone + 1 :] for i, row in enumerate(r["trust"]) if i != gone]
    results["extra"]["privacy"].pop("peer-2")
    (run / "results.json").write_text(json.dumps(results))

    report = build_report(run)
    checks = _checks(report)

    assert report.verdict == "fail"
    assert checks["ledgers.accounted"] == "fail"  # its ledger is still in ledgers/
    assert checks["roster.accounted"] == "fail"  # its key is still pinned
    assert "peer-2" in next(c.detail for c in report.checks if c.id == "ledgers.accounted")


def test_a_weakened_security_setting_fails_even_with_a_consistent_hash(
    dp_run: Path, tmp_path: Path
) -> None:
    run = _copy(dp_run, tmp_path)
    results = json.loads((run / "results.json").read_text())
    results["config"]["security"]["max_clock_skew_s"] = 3600.0
    results["config"]["security"]["max_adapter_norm_ratio"] = 100.0
    results["config_hash"] = config_from_dict(results["config"]).digest()  # re-hashed
    (run / "results.json").write_text(json.dumps(results))

    report = build_report(run)
    failed = {c.id: c.detail for c in report.checks if c.status == "fail"}

    assert set(failed) == {"policy.security"}
    assert "max_clock_skew_s" in failed["policy.security"]
    assert "max_adapter_norm_ratio" in failed["policy.security"]


def test_seeded_noise_fails_under_the_default_policy(dp_run: Path, tmp_path: Path) -> None:
    run = _copy(dp_run, tmp_path)
    results = json.loads((run / "results.json").read_text())
    results["config"]["privacy"]["secure_rng"] = False
    results["config_hash"] = config_from_dict(results["config"]).digest()
    (run / "results.json").write_text(json.dumps(results))

    checks = _checks(build_report(run))
    relaxed = _checks(build_report(run, policy=ReviewPolicy(require_secure_rng=False)))

    assert checks["dp.noise"] == "fail"
    assert relaxed["dp.noise"] == "warn"


def test_a_policy_file_is_checked_like_a_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    for text, match in [
        ("max_epsilon = inf\n", "max_epsilon"),
        ("max_epsilom = 4.0\n", "did you mean max_epsilon"),
        ('security_mode = "none"\n', "security_mode"),
        ("required_audits = 3\n", "required_audits"),
    ]:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_policy(bad)
    assert load_policy(ROOT / "examples" / "review_policy.toml") == DEFAULT_POLICY


# ----------------------------------------------------------------------------- bad input


def test_unreadable_inputs_raise_report_error(dp_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="not a directory"):
        build_report(tmp_path / "nope")
    with pytest.raises(ReportError, match="no such file"):
        build_report(tmp_path)
    (tmp_path / "results.json").write_text('{"peer_ids": NaN}')
    with pytest.raises(ReportError, match="NaN"):
        build_report(tmp_path)
    for bad in ('{"a": 1, "a": 2}', "[" * 5000 + "]" * 5000, '{"peer_ids": "x"'):
        (tmp_path / "results.json").write_text(bad)  # duplicate key, too deep, truncated
        with pytest.raises(ReportError, match="results"):
            build_report(tmp_path)
    results = json.loads((dp_run / "results.json").read_text())
    results["rounds"][1]["test_ppl"] = [1.0]
    (tmp_path / "results.json").write_text(json.dumps(results))
    with pytest.raises(ReportError, match=r"rounds\[1\]\.test_ppl"):
        build_report(tmp_path)
    bad_audit = tmp_path / "audit.json"
    bad_audit.write_text(json.dumps({"campaign": "x", "attacks": [{"label": "a"}]}))
    with pytest.raises(ReportError, match="missing field 'metrics'"):
        build_report(dp_run, [bad_audit])


def test_cli_report_writes_json_and_html_and_reports_bad_input(
    dp_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    audit = _audit_on_run_base(dp_run, tmp_path)

    code = main(["report", str(dp_run), "--audit", str(audit), "--out", str(out)])

    assert code == 0
    assert json.loads((out / "report.json").read_text())["verdict"] == "pass"
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert "verdict: PASS" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing")]) == 3
    assert "ReportError" in capsys.readouterr().err


def _audit_on_run_base(run: Path, tmp: Path, source: Path = MIA_DP) -> Path:
    """An audit result as if it had been measured on the run's base model (same figures)."""
    audit = json.loads(source.read_text())
    audit["base_model"] = json.loads((run / "results.json").read_text())["base_model"]
    path = tmp / f"{source.stem}-same-base.json"
    path.write_text(json.dumps(audit))
    return path


def test_an_audit_of_another_base_model_fails_the_report(dp_run: Path, tmp_path: Path) -> None:
    # the committed audit was measured on the toolkit's small base; this run used the tiny one
    checks = _checks(build_report(dp_run, [MIA_DP]))
    same = _checks(build_report(dp_run, [_audit_on_run_base(dp_run, tmp_path)]))
    assert checks["audit.mia-dp.base_model"] == "fail"
    assert same["audit.mia-dp.base_model"] == "pass"
    # an audit the policy does not require is evidence beside the verdict, not part of it
    assert build_report(dp_run, [MIA_DP]).document["verdict"] == "pass"
    required = ReviewPolicy(name="requires mia-dp", required_audits=("mia-dp",))
    assert build_report(dp_run, [MIA_DP], required).document["verdict"] == "fail"


def test_positive_controls_are_labelled_and_never_part_of_the_verdict(dp_run: Path) -> None:
    report = build_report(dp_run, [MIA_NONDP], ReviewPolicy(required_audits=("mia-nondp",)))
    controls = [c for c in report.checks if c.id.startswith("control.mia-nondp.")]

    assert controls and all(not c.counts for c in controls)
    assert all(c.title.startswith("positive control") for c in controls)
    assert not any(c.id.startswith("audit.mia-nondp.") and c.id.endswith(".roc_auc")
                   for c in report.checks)  # fmt: skip


# ----------------------------------------------------------------------------- HTML


HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_html_escapes_every_outside_string_and_loads_nothing(dp_run: Path) -> None:
    doc = copy.deepcopy(build_report(dp_run, [MIA_DP]).document)
    doc["peers"][0]["peer_id"] = HOSTILE
    doc["trust"]["peer_ids"][0] = HOSTILE
    doc["run"]["strategy"] = HOSTILE
    doc["audits"][0]["description"] = HOSTILE
    doc["audits"][0]["attacks"][0]["label"] = HOSTILE
    doc["checks"][0]["detail"] = HOSTILE

    html = render_html(doc)

    assert HOSTILE not in html
    assert "<script" not in html and "<img" not in html
    assert (
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"
        in html
    )
    assert "http://" not in html and "https://" not in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    cmd = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", *args,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_html_renders_in_headless_chromium_with_its_plots(dp_run: Path, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        if os.environ.get("SECURE_PCFT_REQUIRE_BROWSER") == "1":
            pytest.fail("SECURE_PCFT_REQUIRE_BROWSER=1 but /usr/bin/chromium is missing")
        pytest.skip("no /usr/bin/chromium (apt-get install chromium); CI requires it")
    audits = [_audit_on_run_base(dp_run, tmp_path, a) for a in (MIA_DP, MIA_NONDP)]
    _, html_path = write_report(build_report(dp_run, audits), tmp_path / "r")
    url = html_path.resolve().as_uri()

    dom = _chromium("--dump-dom", url, profile=tmp_path / "p1")
    shot = tmp_path / "report.png"
    shown = _chromium(
        f"--screenshot={shot}", "--window-size=1200,2000", url, profile=tmp_path / "p2"
    )
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    control = tmp_path / "blank.png"
    _chromium(f"--screenshot={control}", "--window-size=1200,2000", blank.as_uri(),
              profile=tmp_path / "p3")  # fmt: skip

    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = dom.stdout
    for plot in ("plot-epsilon", "plot-trust-final", "plot-roc-0", "plot-roc-1", "plot-roc-log-0"):
        assert f'<svg id="{plot}"' in rendered, plot
    epsilon_svg = rendered.split('<svg id="plot-epsilon"', 1)[1].split("</svg>", 1)[0]
    assert epsilon_svg.count('class="series"') == 3  # one step line per peer
    assert "budget 50 (off scale)" in epsilon_svg  # ε ≈ 3.9 of 50: the budget is named, not drawn
    trust_svg = rendered.split('<svg id="plot-trust-final"', 1)[1].split("</svg>", 1)[0]
    assert trust_svg.count('class="cell"') == 9
    assert "Verdict: PASS" in rendered
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert _png_size(shot) == (1200, 2000)
    # a page with tables and plots compresses far worse than an empty one
    assert shot.stat().st_size > 5 * control.stat().st_size


# ----------------------------------------------------------------------------- scope, times, print


def test_report_says_what_it_does_not_cover(dp_run: Path) -> None:
    report = build_report(dp_run)
    scope = report.document["scope"]
    html = render_html(report.document)

    block = report.document["run"]["config"]["data"]["block_size"]
    assert f"one training block of {block} tokens" in scope["privacy_unit"]
    assert "k·ε" in scope["privacy_unit"]
    for peer in report.document["peers"]:  # δ per peer, set against its 1/n
        assert f"{peer['peer_id']} {peer['privacy']['delta']:g} (n = " in scope["delta"]
    assert "sender, recipient, round" in scope["relay_sees"]
    not_covered = " ".join(scope["not_covered"])
    for trusted in (
        "base model",
        "receipt can be withheld",
        "budget store",
        "model each peer keeps",
    ):
        assert trusted in not_covered
    assert "What this report does not cover" in html and "TM-07" in html


def test_threat_model_titles_match_the_repository() -> None:
    from secure_pcft.report.scope import THREAT_MODELS

    table = (ROOT / "threat_models" / "README.md").read_text()
    rows = dict(re.findall(r"^\| \[(TM-\d\d)\]\([^)]*\) \| (.+?) \|$", table, flags=re.M))

    assert rows == THREAT_MODELS


def test_run_times_and_versions_are_recorded_and_compared(dp_run: Path, tmp_path: Path) -> None:
    doc = build_report(dp_run).document
    run = doc["run"]
    assert run["started_at"] <= run["finished_at"] and run["started_at"].endswith("+00:00")
    assert run["versions"]["secure-pcft"] == doc["versions"]["secure-pcft"]
    assert _checks(build_report(dp_run))["versions"] == "pass"

    moved = _copy(dp_run, tmp_path)
    results = json.loads((moved / "results.json").read_text())
    results["versions"]["torch"] = "0.0.1"
    (moved / "results.json").write_text(json.dumps(results))
    del results["versions"]
    older = _copy(dp_run, tmp_path / "older")
    (older / "results.json").write_text(json.dumps(results))

    other = build_report(moved)
    assert _checks(other)["versions"] == "warn"
    assert "torch 0.0.1 (run)" in next(c.detail for c in other.checks if c.id == "versions")
    assert _checks(build_report(older))["versions"] == "warn"


def test_folded_sections_are_printed_unfolded(dp_run: Path, tmp_path: Path) -> None:
    html = render_html(build_report(dp_run).document)

    assert "@media print" in html and "details.fold{display:none}" in html
    printed = html.split('<div class="print-only">')
    assert len(printed) == 3  # passed checks and the full configuration
    assert "passed checks</h3>" in printed[1] and "full configuration</h3>" in printed[2]
    if not CHROMIUM.exists():
        return
    full, folded = tmp_path / "full.html", tmp_path / "folded.html"
    full.write_text(html)
    folded.write_text(html.replace(".print-only{display:block}", ""))
    pages = []
    for i, page in enumerate((full, folded)):
        pdf = tmp_path / f"{page.stem}.pdf"
        done = _chromium(f"--print-to-pdf={pdf}", "--no-pdf-header-footer", page.as_uri(),
                         profile=tmp_path / f"pdf{i}")  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        pages.append(len(re.findall(rb"/Type\s*/Page[^s]", pdf.read_bytes())))
    assert pages[0] > pages[1] >= 1  # the unfolded content takes pages of its own


def test_roc_curves_are_also_drawn_on_log_log_axes(dp_run: Path, tmp_path: Path) -> None:
    from secure_pcft.report.page import _log_roc
    from secure_pcft.report.plots import Series

    svg = _log_roc(
        0, "c", [Series("a", [(0.0, 0.0), (0.001, 0.01), (0.1, 0.5), (1.0, 1.0)], "#000")]
    )
    points = svg.split('class="series" d="', 1)[1].split('"', 1)[0]

    assert 'id="plot-roc-log-0"' in svg and "log₁₀ false positive rate" in svg
    assert points.count("L") + points.count("M") == 3  # (0, 0) has no logarithm: left out
    assert _log_roc(0, "c", [Series("a", [(0.0, 0.0), (0.0, 1.0)], "#000")]) == ""
    html = render_html(build_report(dp_run, [_audit_on_run_base(dp_run, tmp_path)]).document)
    assert 'id="plot-roc-log-0"' in html


def test_an_interrupted_dp_run_is_reportable_from_its_ledgers(
    tmp_path: Path, tiny_base_dir: Path
) -> None:
    """Ctrl-C after round 1's releases: no results.json, but run.json and verified ledgers; the
    report says the run is incomplete (FAIL) and shows every peer's spend."""
    from secure_pcft.data.settings import register_data_source
    from secure_pcft.run import execute_run

    register_data_source("tiny-report-test", lambda _: tiny_federation(), force=True)
    cfg = RunConfig(
        model=replace(RunConfig().model, base=str(tiny_base_dir)),
        data=DataConfig(source="tiny-report-test", block_size=16),
        train=TRAIN,
        strategy=StrategyConfig(name="fedavg"),
        privacy=PrivacyConfig(enabled=True, noise_multiplier=1.0, delta=1e-4, secure_rng=True),
        output=OutputConfig(dir=str(tmp_path / "out")),
    )

    def stop_after_round_1(stage: str, done: int, total: int, note: str = "") -> None:
        if stage.startswith("rounds") and done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        execute_run(cfg, progress=stop_after_round_1)
    assert not (tmp_path / "out" / "results.json").exists()

    report = build_report(tmp_path / "out")
    checks = _checks(report)

    assert report.verdict == "fail" and checks["run.complete"] == "fail"
    assert report.document["run"]["complete"] is False
    assert all(p["privacy"]["ledger"]["status"] == "verified" for p in report.document["peers"])
    assert all(float(p["privacy"]["epsilon_spent"]) > 0 for p in report.document["peers"])
    jsonschema.validate(report.document, REPORT_SCHEMA)
    render_html(report.document)


def test_a_tpr_above_what_the_targets_epsilon_allows_fails_whatever_the_policy(
    dp_run: Path, tmp_path: Path
) -> None:
    """A broken mechanism (clipping off, an accountant that undercounts) shows as a membership test
    that beats the bound its target's (ε, δ) implies; committed audits stay within it."""
    audit = json.loads(MIA_DP.read_text())
    lira = next(a for a in audit["attacks"] if a["label"] == "lira")
    lira["metrics"].update({"tpr_at_1pct_fpr": 0.4, "tpr_at_1pct_fpr_ci_low": 0.3})
    broken = tmp_path / "mia-dp.json"
    broken.write_text(json.dumps(audit))

    report = build_report(dp_run, [broken])
    genuine = build_report(dp_run, [MIA_DP])

    bound = {c.id: c for c in report.checks if ".tpr_bound." in c.id}
    assert bound["audit.mia-dp.lira.tpr_bound.0.01"].status == "fail"
    assert bound["audit.mia-dp.lira.tpr_bound.0.01"].counts  # not required, still counts
    assert report.verdict == "fail"
    assert all(c.status == "pass" for c in genuine.checks if ".tpr_bound." in c.id)
    peer = genuine.document["peers"][0]["privacy"]
    assert 0.01 <= peer["tpr_bounds"]["0.01"] <= 1.0 and peer["mu"] is not None


def test_a_consistent_rewrite_of_a_ledger_contradicts_the_heads_its_partners_kept(
    dp_run: Path, tmp_path: Path
) -> None:
    """The chain is keyless: a site can rewrite its ledger with a raised budget so that it verifies.
    But each adapter it released carried its signed ledger head; the partners kept them."""
    genuine = _checks(build_report(dp_run))
    results = json.loads((dp_run / "results.json").read_text())
    held = [r["head"]["peer"] for rs in results["extra"]["receipts"].values() for r in rs]
    kinds = {r["type"] for rs in results["extra"]["receipts"].values() for r in rs}
    assert kinds == {"adapter", "he-answer"}  # adapters and encrypted similarity answers carry one
    target = max(set(held), key=held.count)  # a peer whose signed heads others hold
    run = _copy(dp_run, tmp_path)
    path = ledger_path(run / "ledgers", target)
    contents = read_ledger(path)
    path.unlink()
    path.with_name(path.name + ".head").unlink()
    forged = PrivacyLedger.open(
        path, peer_id=target, delta=contents.genesis.delta, budget_epsilon=1000.0,
        accountant=contents.genesis.accountant,
    )  # fmt: skip
    forged.append(list(contents.events))  # the same events, a raised budget: it verifies
    forged.close()

    checks = _checks(build_report(run))

    assert genuine[f"receipts.{target}"] == "pass"
    assert checks[f"ledger.{target}"] == "pass"  # the rewrite verifies on its own ...
    assert checks[f"receipts.{target}"] == "fail"  # ... and contradicts what its partners hold
    others = {
        k: v for k, v in checks.items() if k.startswith("receipts.") and k != f"receipts.{target}"
    }
    assert all(v == "pass" for v in others.values())


def test_a_real_unprotected_model_passed_off_as_epsilon_1_fails_the_bound(
    dp_run: Path, tmp_path: Path
) -> None:
    """Not hand-made figures: the document-level positive control's own measured attacks (a target
    trained without DP) with its target relabelled as ε = 1 — what a broken mechanism or accountant
    would record. Its LiRA / RMIA TPRs at FPR 1 % lie far above what ε = 1 allows, so the report
    fails; the genuine document-level DP audit stays within its bound."""
    audit = json.loads((ROOT / "audits" / "results" / "mia-document-nondp.json").read_text())
    audit["targets"][0].update({"epsilon": 1.0, "delta": 0.0025})
    claimed = tmp_path / "mia-document-nondp.json"
    claimed.write_text(json.dumps(audit))

    report = build_report(dp_run, [claimed])
    genuine = build_report(dp_run, [ROOT / "audits" / "results" / "mia-document-dp.json"])

    failed = {c.id for c in report.checks if ".tpr_bound." in c.id and c.status == "fail"}
    assert "audit.mia-document-nondp.rmia.tpr_bound.0.01" in failed and report.verdict == "fail"
    assert all(c.status == "pass" for c in genuine.checks if ".tpr_bound." in c.id)
    assert genuine.document["audits"][0]["unit"] == "document"
    units = {c.id: c.status for c in genuine.checks if c.id.endswith(".unit")}
    assert units == {"audit.mia-document-dp.unit": "warn"}  # the run protects blocks


def test_every_committed_audit_stays_within_the_bound_its_targets_epsilon_implies() -> None:
    """Every committed audit's measured TPRs lie within what its target's (ε, δ) allows — except
    the deliberately broken mechanisms, which the check must catch: white-box DP-SGD with clipping
    off (audits/whitebox_dp.toml, ``broken = "no-clip"``) reaches TPR 1 at FPR 1 %."""
    from secure_pcft.report.audits import _tpr_bound_checks, load_audit

    judged, caught = 0, set()
    for path in sorted((ROOT / "audits" / "results").glob("*.json")):
        if path.name.endswith(".scores.json") or path.name == "summary.json":
            continue
        raw = json.loads(path.read_text())
        broken = {a["label"] for a in raw["attacks"] if a.get("params", {}).get("broken")}
        for c in _tpr_bound_checks(load_audit(path)):
            label = c.id.split(".")[2]
            judged += 1
            if label in broken:
                caught |= {label} if c.status == "fail" else set()
            else:
                assert c.status == "pass", c.detail
    assert judged >= 8 and "noclip-eps8" in caught
