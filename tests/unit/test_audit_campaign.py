"""Audit campaigns: TOML → validated frozen dataclasses → real runs → results JSON and summary."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import pytest

from secure_pcft.audit import Campaign, campaign_from_dict, load_campaign, run_campaign
from secure_pcft.audit.runner import run_campaign_files
from secure_pcft.cli import main
from secure_pcft.errors import ConfigError, CorruptFileError
from tests.conftest import _sentences
from tests.unit.test_audit_attacks import audit_base_dir

AUDITS = Path(__file__).resolve().parents[2] / "audits"


def write_peers(tmp: Path) -> dict[str, str]:
    """Two peers' private files (target, attacker's population) and a public reference file."""
    paths = {}
    for name, seed in (("target", 400), ("population", 401)):
        paths[name] = str(tmp / f"{name}.txt")
        Path(paths[name]).write_text("\n".join(_sentences("a", 80, seed)) + "\n")
    paths["reference"] = str(tmp / "public.txt")
    Path(paths["reference"]).write_text("\n".join(_sentences("b", 70, 402)) + "\n")
    return paths


def campaign_toml(tmp: Path, *, extra_target: str = "", attacks: str = "") -> str:
    p = write_peers(tmp)
    return textwrap.dedent(
        f"""
        [campaign]
        name = "tiny-mia"
        description = "overfit non-DP peer on the test base"
        threat_models = ["TM-01", "TM-05"]
        trials = 1
        seed = 1
        [campaign.summary]
        mia_auc_nondp = ["loss.roc_auc", "ref.roc_auc"]
        epsilon = "target.epsilon"

        [target]
        peer = "target"
        population_peers = ["population"]
        [target.model]
        base = "{audit_base_dir()}"
        [target.lora]
        r = 8
        dropout = 0.0
        [target.data]
        source = "files"
        paths = ["{p["target"]}", "{p["population"]}"]
        reference_path = "{p["reference"]}"
        reference_docs = 64
        val_fraction = 0.25
        test_fraction = 0.25
        block_size = 16
        [target.train]
        batch_size = 64
        lr = 5e-3
        warmup_steps = 0
        total_steps = 60
        {extra_target}

        [[attacks]]
        name = "loss"
        max = {{ roc_auc = 1.0 }}
        min = {{ roc_auc = 0.75 }}

        [[attacks]]
        name = "reference"
        label = "ref"
        params = {{ reference = "base" }}
        {attacks}
        """
    )


def test_a_campaign_loads_into_validated_frozen_dataclasses(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(campaign_toml(tmp_path))

    campaign = load_campaign(path)

    assert isinstance(campaign, Campaign)
    assert campaign.threat_models == ("TM-01", "TM-05")
    assert [a.label for a in campaign.attacks] == ["loss", "ref"]
    assert campaign.target.run.lora.r == 8 and campaign.target.peer == "target"
    assert campaign.summary["mia_auc_nondp"] == ("loss.roc_auc", "ref.roc_auc")
    with pytest.raises(dataclasses.FrozenInstanceError):
        campaign.trials = 2  # type: ignore[misc]


def _raw(tmp: Path) -> dict[str, object]:
    import tomllib

    return tomllib.loads(campaign_toml(tmp))


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda r: r.update(extra=1), r"unknown key\(s\): extra"),
        (lambda r: r["campaign"].update(threat_models=["TM-1"]), "threat_models"),
        (lambda r: r["campaign"].update(trials=0), "trials"),
        (lambda r: r["attacks"][0].update(name="nope"), "unknown attack"),
        (lambda r: r["attacks"][1].update(params={"reference": "x"}), "reference"),
        (lambda r: r["attacks"][1].update(label="loss"), "unique"),
        (lambda r: r["attacks"][0].update(max={"roc_auc": "high"}), "a number"),
        (lambda r: r["campaign"]["summary"].update(x="nobody.roc_auc"), "summary"),
        (lambda r: r["target"]["train"].update(lr=-1), r"\[train\] lr"),
        (lambda r: r["target"].update(security={}), r"unknown key\(s\): security"),
        (lambda r: r["target"].update(canaries={"inclusion": 0.3}), "inclusion"),
        (lambda r: r["target"].update(update={"optimizer": "lbfgs"}), "optimizer"),
    ],
)
def test_invalid_campaigns_raise_config_errors_naming_the_field(
    tmp_path: Path, mutate: object, match: str
) -> None:
    raw = _raw(tmp_path)
    mutate(raw)  # type: ignore[operator]

    with pytest.raises(ConfigError, match=match):
        campaign_from_dict(raw)


def test_missing_or_broken_campaign_files_raise_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_campaign(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[campaign\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_campaign(bad)


def test_a_campaign_runs_real_training_and_writes_results_and_summary(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(campaign_toml(tmp_path, extra_target="[target.canaries]\ncount = 2\n"
                                  'copies = 4\ndigits = 3\nprefix = "number"\ncandidates = 50',
                                  attacks='[[attacks]]\nname = "canary"'))  # fmt: skip
    (tmp_path / "out").mkdir()
    earlier = {"other_auc": 0.5, "stale_key": 0.9, "_sources": {"other_auc": "other-campaign",
               "stale_key": "tiny-mia"}, "_base_models": ["/cache/bases/small-0123"]}  # fmt: skip
    (tmp_path / "out" / "summary.json").write_text(json.dumps(earlier))

    results = run_campaign_files([path], tmp_path / "out")

    (result,) = results
    data = json.loads((tmp_path / "out" / "tiny-mia.json").read_text())
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert data["passed"] is result.passed
    assert data["targets"][0]["members"] > 10 and data["targets"][0]["epsilon"] == "inf"
    assert [a["label"] for a in data["attacks"]] == ["loss", "ref", "canary"]
    auc = max(a["metrics"]["roc_auc"] for a in data["attacks"][:2])
    assert summary["mia_auc_nondp"] == pytest.approx(auc)
    assert summary["_sources"]["mia_auc_nondp"] == "tiny-mia"
    # figures of campaigns that did not run are kept; the re-run campaign's old figures are not
    assert summary["other_auc"] == 0.5 and summary["_sources"]["other_auc"] == "other-campaign"
    assert "stale_key" not in summary and "stale_key" not in summary["_sources"]
    # bases by name, not by this machine's path: the kept campaign's and the one that ran
    assert summary["_base_models"] == sorted({"small-0123", Path(data["base_model"]).name})
    text = (tmp_path / "out" / "tiny-mia.json").read_text()
    assert "plant" not in text and "pump" not in text  # no private text in results
    scores = json.loads((tmp_path / "out" / "tiny-mia.scores.json").read_text())
    loss = scores["attacks"][0]
    assert loss["label"] == "loss" and len(loss["trials"]) == 1
    members, nonmembers = loss["trials"][0]["member_scores"], loss["trials"][0]["nonmember_scores"]
    assert len(members) == data["targets"][0]["members"] and len(nonmembers) > 10
    # the per-example scores give back the recorded AUC
    wins = sum((m > n) + 0.5 * (m == n) for m in members for n in nonmembers)
    auc = data["attacks"][0]["metrics"]["roc_auc"]
    assert wins / (len(members) * len(nonmembers)) == pytest.approx(auc, abs=1e-9)


def test_a_corrupt_summary_fails_before_any_campaign_runs(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(campaign_toml(tmp_path))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "summary.json").write_text('{"mia_auc_nondp": 0.5, "_sources": [')
    with pytest.raises(CorruptFileError, match=r"summary\.json"):
        run_campaign_files([path], tmp_path / "out")
    assert not (tmp_path / "out" / "tiny-mia.json").exists()
    assert (tmp_path / "out" / "summary.json").read_text().endswith("[")  # left as it was


def test_thresholds_decide_pass_and_fail(tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    raw["attacks"][0]["max"] = {"roc_auc": 0.01}  # type: ignore[index]
    raw["attacks"][0]["min"] = {"no_such_metric": 0.0}  # type: ignore[index]
    raw["target"]["train"]["total_steps"] = 2  # type: ignore[index]

    result = run_campaign(campaign_from_dict(raw))

    assert not result.passed
    failures = result.attacks[0].failures
    assert any("roc_auc" in f and "max 0.01" in f for f in failures)
    assert any("no_such_metric" in f for f in failures)
    assert result.attacks[1].failures == []


def test_a_campaign_without_thresholds_has_no_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It used to report PASS (and exit 0) although nothing was judged.
    text = (
        campaign_toml(tmp_path)
        .replace("max = { roc_auc = 1.0 }", "")
        .replace("min = { roc_auc = 0.75 }", "")
    )
    text = text.replace("total_steps = 60", "total_steps = 2")
    path = tmp_path / "unjudged.toml"
    path.write_text(text)

    code = main(["audit", str(path), "--output", str(tmp_path / "out")])

    out = capsys.readouterr().out
    data = json.loads((tmp_path / "out" / "tiny-mia.json").read_text())
    assert code == 6, out
    assert "tiny-mia: NO VERDICT" in out and "PASS" not in out
    assert "measured only" in out
    assert (data["verdict"], data["passed"]) == ("none", None)
    assert [a["verdict"] for a in data["attacks"]] == ["none", "none"]
    assert all(a["passed"] is None for a in data["attacks"])


def test_one_judged_attack_decides_the_verdict(tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    raw["target"]["train"]["total_steps"] = 2  # type: ignore[index]
    raw["attacks"][0]["min"] = {"roc_auc": 0.0}  # type: ignore[index]

    result = run_campaign(campaign_from_dict(raw))

    assert [a.verdict for a in result.attacks] == ["pass", "none"]
    assert result.verdict == "pass" and result.passed


def test_cli_audit_runs_an_update_campaign_and_exits_zero_on_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = campaign_toml(tmp_path).split("[[attacks]]")[0]
    raw = raw.replace('name = "tiny-mia"', 'name = "tiny-recon"').replace(
        'mia_auc_nondp = ["loss.roc_auc", "ref.roc_auc"]', 'recall = "span.token_recall"'
    )
    raw = raw.replace("r = 8", "r = 16")
    raw += textwrap.dedent(
        """
        [target.update]
        optimizer = "sgd"
        lr = 0.1
        warm_steps = 5
        tokens = 12

        [[attacks]]
        name = "span-reconstruction"
        label = "span"
        min = { token_precision = 0.99 }
        """
    )
    path = tmp_path / "recon.toml"
    path.write_text(raw)

    code = main(["audit", str(path), "--output", str(tmp_path / "out")])

    out = capsys.readouterr().out
    assert code == 0, out
    assert "tiny-recon: PASS" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["recall"] >= 0.8


PLUGIN = """
import numpy as np
from secure_pcft.audit import register_attack
from secure_pcft.audit.attack import Attack, membership_result


@register_attack
class FirstToken(Attack):
    '''Membership by the first token alone (TM-01: a curious peer reads the released adapter).'''

    name = "first-token-plugin"
    threat_models = ("TM-01",)

    def run(self, target, rng):
        score = lambda blocks: blocks[:, 0].double().numpy()
        return membership_result(self.name, self.threat_models, score(target.members),
                                 score(target.nonmembers))
"""


def test_cli_audit_uses_a_custom_attack_from_a_plugin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin = tmp_path / "my_attacks.py"
    plugin.write_text(PLUGIN)
    text = (
        campaign_toml(tmp_path)
        .split("[[attacks]]")[0]
        .replace("total_steps = 60", "total_steps = 2")
    )
    text = text.replace('mia_auc_nondp = ["loss.roc_auc", "ref.roc_auc"]', 'auc = "mine.roc_auc"')
    text += '[[attacks]]\nname = "first-token-plugin"\nlabel = "mine"\nmin = { roc_auc = 0.0 }\n'
    path = tmp_path / "custom.toml"
    path.write_text(text)
    out_dir = tmp_path / "out"

    without = main(["audit", str(path), "--output", str(out_dir)])
    assert without == 3 and "first-token-plugin" in capsys.readouterr().err
    code = main(["audit", str(path), "--output", str(out_dir), "--plugin", str(plugin)])

    assert code == 0, capsys.readouterr()
    data = json.loads((out_dir / "tiny-mia.json").read_text())
    assert data["attacks"][0]["name"] == "first-token-plugin"
    assert main(["audit", str(path), "--plugin", "no_such_module_xyz"]) == 3


def test_cli_audit_reports_an_invalid_campaign_as_a_typed_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[campaign]\nname = "x"\n')

    code = main(["audit", str(bad), "--output", str(tmp_path)])

    assert code == 3
    assert "ConfigError" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted(AUDITS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_campaigns_are_valid(path: Path) -> None:
    campaign = load_campaign(path)

    assert campaign.threat_models and campaign.attacks


def test_several_trials_give_an_interval_over_trials(tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    raw["campaign"]["trials"] = 2  # type: ignore[index]
    raw["target"]["train"]["total_steps"] = 2  # type: ignore[index]

    result = run_campaign(campaign_from_dict(raw))

    m = result.attacks[0].metrics
    per_trial = [r.metrics["roc_auc"] for r in result.attacks[0].results]
    assert len(per_trial) == 2
    assert m["roc_auc_trials_ci_low"] <= m["roc_auc"] <= m["roc_auc_trials_ci_high"]
    assert m["roc_auc"] == pytest.approx(sum(per_trial) / 2)


def test_report_shows_the_interval_of_a_figure() -> None:
    from secure_pcft.report.page import _interval

    one = {"roc_auc": 0.9, "roc_auc_ci_low": 0.85, "roc_auc_ci_high": 0.95}
    several = {**one, "roc_auc_trials_ci_low": 0.7, "roc_auc_trials_ci_high": 1.0}

    assert "[0.85, 0.95] 95 % bootstrap" in _interval(one, "roc_auc")
    assert "[0.7, 1] 95 % over trials" in _interval(several, "roc_auc")
    assert _interval({"roc_auc": 0.9}, "roc_auc") == ""


# ---- audits in the privacy unit ---------------------------------------------------------------

DOC_PRIVACY = (
    '[target.privacy]\nenabled = true\nnoise_multiplier = 0.6\ndelta = 1e-3\nunit = "document"'
)


def test_a_document_level_campaign_scores_whole_documents(tmp_path: Path) -> None:
    from secure_pcft.privacy.attack_bounds import tpr_bound_eps_delta

    path = tmp_path / "c.toml"
    lira = '[[attacks]]\nname = "lira-offline"\nlabel = "lira"\nparams = { shadows = 2 }'
    text = campaign_toml(tmp_path, extra_target=DOC_PRIVACY, attacks=lira)
    path.write_text(text.replace("block_size = 16", "block_size = 8"))  # sentences: 1-2 blocks

    (result,) = run_campaign_files([path], tmp_path / "out")

    data = json.loads((tmp_path / "out" / "tiny-mia.json").read_text())
    target = data["targets"][0]
    assert data["unit"] == target["unit"] == "document"
    # candidates are documents of one or more blocks: scores are one per document
    assert target["members"] > target["member_units"] > 10
    scores = json.loads((tmp_path / "out" / "tiny-mia.scores.json").read_text())
    for attack in scores["attacks"]:
        trial = attack["trials"][0]
        assert len(trial["member_scores"]) == target["member_units"]
        assert len(trial["nonmember_scores"]) == target["nonmember_units"]
    eps, delta = float(target["epsilon"]), float(target["delta"])
    assert data["tpr_bound_at_fpr_0.01"] == pytest.approx(tpr_bound_eps_delta(eps, delta, 0.01))
    assert data["tpr_bound_at_fpr_0.001"] == pytest.approx(tpr_bound_eps_delta(eps, delta, 0.001))
    assert data["attacks"][0]["per_trial"][0]["details"]["unit"]["name"] == "document"
    assert result.campaign.target.run.privacy.unit == "document"
    # the code and command that produced the figures (benchmarks/stale.py reads the commit)
    import hashlib

    assert len(data["provenance"]["commit"]) == 40 and data["provenance"]["command"]
    assert data["provenance"]["campaign_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "attack", ['[[attacks]]\nname = "signature-mia"', '[[attacks]]\nname = "whitebox-dirac"']
)
def test_an_attack_that_measures_blocks_is_refused_in_a_coarser_unit(
    tmp_path: Path, attack: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(campaign_toml(tmp_path, extra_target=DOC_PRIVACY, attacks=attack))
    with pytest.raises(ConfigError, match="measures token blocks"):
        load_campaign(path)
