"""The white-box DP-SGD audit (Dirac gradient canaries) has the power to fail: it flags broken
mechanisms that report the correct ε, and never flags the correct one (issue 14, item 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from secure_pcft.audit import campaign_from_dict, run_campaign
from secure_pcft.audit.whitebox import WhiteboxDirac
from secure_pcft.errors import ConfigError
from tests.unit.test_audit_campaign import _raw

CANARIES = 6000
GRID = [[150, 150], [750, 750], [2000, 2000]]


def _whitebox_campaign(tmp_path: Path, eps: float) -> dict[str, object]:
    raw = _raw(tmp_path)
    raw["target"]["privacy"] = {"enabled": True, "target_epsilon": eps}  # type: ignore[index]
    raw["target"]["train"].update({"batch_size": 256, "lr": 0.05, "total_steps": 20})  # type: ignore[index,union-attr]
    raw["campaign"]["summary"] = {}  # type: ignore[index]
    raw["attacks"] = [
        {"name": "whitebox-dirac", "label": label,
         "params": {"canaries": CANARIES, "guesses": GRID, "broken": broken}}
        for label, broken in (("correct", "none"), ("no-clip", "no-clip"), ("noise4", "noise/4"))
    ]  # fmt: skip
    return raw


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, float]]:
    raw = _whitebox_campaign(tmp_path_factory.mktemp("whitebox"), eps=4.0)
    result = run_campaign(campaign_from_dict(raw))
    return {a.spec.label: a.metrics for a in result.attacks}


def test_the_audit_has_the_power_to_exceed_the_reported_epsilon(
    outcome: dict[str, dict[str, float]],
) -> None:
    for m in outcome.values():
        assert m["epsilon_reported"] == pytest.approx(4.0, abs=0.02)
        assert m["epsilon_lb_ceiling"] > m["epsilon_reported"] + 2.0


def test_the_correct_mechanism_is_not_flagged(outcome: dict[str, dict[str, float]]) -> None:
    correct = outcome["correct"]

    assert correct["sound"] == 1.0 and correct["flagged"] == 0.0
    assert correct["epsilon_lb"] <= correct["epsilon_reported"]


@pytest.mark.parametrize("broken", ["no-clip", "noise4"])
def test_a_broken_mechanism_reporting_the_same_epsilon_is_flagged(
    outcome: dict[str, dict[str, float]], broken: str
) -> None:
    m = outcome[broken]

    assert m["flagged"] == 1.0
    assert m["epsilon_lb"] > m["epsilon_reported"]


def test_parameters_are_validated() -> None:
    with pytest.raises(ConfigError):
        WhiteboxDirac(canaries=4)
    with pytest.raises(ConfigError):
        WhiteboxDirac(broken="half")
    with pytest.raises(ConfigError):
        WhiteboxDirac(delta=0.5)
