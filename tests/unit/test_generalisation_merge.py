"""benchmarks/generalisation.py --merge: a cell keeps the seeds an invocation does not re-run (with
the commit that produced each), and a seed given again replaces its record."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.conftest import load_script

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))  # the script imports its sibling _common
gen = load_script(BENCH / "generalisation.py", "generalisation")


def _job(setting: str, privacy: str, attacks: tuple[str, ...], seed: int) -> object:
    return gen.Job(setting, privacy, attacks, seed, "small", 0, None, "")


def test_a_merge_keeps_the_seeds_it_does_not_rerun_and_replaces_those_it_does() -> None:
    earlier = {"_per_seed": [{"seed": 0, "commit": "a"}, {"seed": 1, "commit": "a"}]}
    jobs = [_job("embedded", "off", ("none",), 1), _job("embedded", "off", ("none",), 2)]
    kept = gen.seeds_kept(earlier, "embedded/off/none", jobs, "")
    assert kept == [{"seed": 0, "commit": "a"}]
    # jobs of another cell (attacks, other privacy, other setting) re-run nothing here
    others = [_job("embedded", "off", ("signflip",), 0), _job("embedded", "eps8", ("none",), 0),
              _job("agnews-specific", "off", ("none",), 0)]  # fmt: skip
    assert gen.seeds_kept(earlier, "embedded/off/none", others, "") == earlier["_per_seed"]
    assert gen.seeds_kept(earlier, "smollm2/embedded/off/none", jobs, "smollm2/") == kept
    assert gen.seeds_kept({}, "embedded/off/none", jobs, "") == []  # a cell from before _per_seed


def test_re_run_labels_replace_theirs_and_every_label_names_its_commit() -> None:
    payload = {"embedded/eps8/none": {"default": {"test_ppl_mean": 2.0}, "local": {"test_ppl_mean": 3.0},
                                      "_seeds": [0], "_commit": "old"}}  # fmt: skip
    job = _job("embedded", "eps8", ("none",), 0)
    gen.merge_labels(
        payload, "embedded/eps8/none", {"default": {"test_ppl_mean": 1.0}}, job, "new", 5.0
    )
    cell = payload["embedded/eps8/none"]
    assert cell["default"] == {"test_ppl_mean": 1.0} and cell["local"] == {"test_ppl_mean": 3.0}
    assert cell["_label_commits"] == {"default": "new", "local": "old"}
    import pytest

    with pytest.raises(SystemExit, match="existing one-seed cell"):
        gen.merge_labels(payload, "agnews-specific/eps8/none", {}, job, "new", 1.0)


def test_merge_from_copies_cells_with_their_stamps(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import json

    target, source = tmp_path / "generalisation.json", tmp_path / "other.json"
    target.write_text(json.dumps({"a/off/none": {"default": {}}, "_meta": {"commit": "t"}}))
    cell = {"_commit": "s", "default": {"test_ppl_mean": 1.0, "worst_peer_vs_start": 1.0}}
    source.write_text(json.dumps({"smollm2/a/off/signflip": cell, "_meta": {"commit": "s"}}))
    written = {}
    monkeypatch.setattr(gen, "write_json", lambda name, payload: written.update(payload))
    monkeypatch.setattr(gen, "targets", lambda payload: {})
    gen.merge_from(target, source)
    assert written["smollm2/a/off/signflip"]["_commit"] == "s" and "a/off/none" in written
    assert written["_meta"]["earlier_invocations"] == [{"commit": "s", "merged_from": "other.json"}]


def test_cells_of_another_privacy_unit_have_their_own_keys_and_seeds() -> None:
    doc = gen.Job("embedded", "eps8", ("none",), 1, "small", 0, None, "", unit="document")
    assert doc.setting_key == "embedded@document"
    assert doc.name == "embedded@document/eps8/none/seed1"
    earlier = {"_per_seed": [{"seed": 0, "commit": "a"}, {"seed": 1, "commit": "a"}]}
    # a document-unit job re-runs its own cell's seed, never the block cell's
    assert gen.seeds_kept(earlier, "embedded@document/eps8/none", [doc], "") == [
        earlier["_per_seed"][0]
    ]
    assert gen.seeds_kept(earlier, "embedded/eps8/none", [doc], "") == earlier["_per_seed"]
    assert gen.EPSILONS == {"eps8": 8.0, "eps3": 3.0}
