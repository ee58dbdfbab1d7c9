"""benchmarks/stale.py: a result recorded at HEAD is current; one recorded before a change to the
library is stale; an unrecorded one falls back to the commit that last wrote it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import load_script

ROOT = Path(__file__).resolve().parents[2]
stale = load_script(ROOT / "benchmarks" / "stale.py", "stale")


def _head() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def _first_commit() -> str:
    out = subprocess.run(["git", "rev-list", "--max-parents=0", "HEAD"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    return out[0]


def test_a_recorded_commit_decides_staleness() -> None:
    if _first_commit() == _head():
        pytest.skip("a shallow clone: no older commit to compare with")
    results = ROOT / "benchmarks" / "results"
    current = results / "_test_current.json"
    old = results / "_test_old.json"
    try:
        current.write_text(json.dumps({"_meta": {"commit": _head(), "dirty": False}}))
        old.write_text(json.dumps({"_meta": {"commit": _first_commit(), "dirty": False}}))

        now, then = stale.status(current), stale.status(old)
    finally:
        current.unlink(missing_ok=True)
        old.unlink(missing_ok=True)

    assert now["known"] == "recorded" and then["known"] == "recorded"
    assert now["stale"] is False and now["changed"] == []
    assert then["stale"] is True and any(f.startswith("secure_pcft/") for f in then["changed"])


def test_an_unrecorded_result_falls_back_to_the_commit_that_wrote_it() -> None:
    result = ROOT / "benchmarks" / "results" / "privacy_utility_paper_quick.json"  # no _meta.commit
    commit, how = stale.producing_commit(result)

    assert how == "last written" and len(commit) == 40


def test_a_merged_result_is_as_stale_as_its_oldest_cell() -> None:
    if _first_commit() == _head():
        pytest.skip("a shallow clone: no older commit to compare with")
    path = ROOT / "benchmarks" / "results" / "_test_merged.json"
    try:
        path.write_text(json.dumps({
            "_meta": {"commit": _head(), "dirty": False},
            "a/off/none": {"_commit": _head(), "_label_commits": {"local": _first_commit()}},
        }))  # fmt: skip
        merged = stale.status(path)
    finally:
        path.unlink(missing_ok=True)

    assert stale.cell_commits(ROOT / "benchmarks" / "results" / "crypto.json") == []
    assert merged["stale"] is True and merged["commit"] == _first_commit()[:10]


def test_an_audit_result_is_known_by_the_provenance_it_records() -> None:
    path = ROOT / "audits" / "results" / "_test_audit.json"
    try:
        path.write_text(json.dumps({"campaign": "x", "provenance": {"commit": _head(),
                                                                    "dirty": True}}))  # fmt: skip
        commit, how = stale.producing_commit(path)
    finally:
        path.unlink(missing_ok=True)
    assert (commit, how) == (_head(), "recorded (tree dirty)")
