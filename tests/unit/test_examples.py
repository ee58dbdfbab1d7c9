"""Every example TOML loads, plans and finds its data as the README runs it (from the repository
root); the sample site files are what their generator writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from secure_pcft.config import RECOMMENDED_STRATEGY, load_config
from secure_pcft.data.settings import load_federation
from secure_pcft.runtime.assembly import RunPlan
from tests.conftest import load_script

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "examples" / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_example_config_loads_and_plans(path: Path) -> None:
    cfg = load_config(path)

    plan = RunPlan.of(cfg, 6)

    assert plan.steps and plan.label


def test_own_files_runs_on_the_shipped_sample_sites(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the README's commands run from the repository root
    cfg = load_config(ROOT / "examples" / "configs" / "own_files.toml")

    fed = load_federation(cfg.data)

    assert fed.peer_ids == ("plant-a", "plant-b", "plant-c")
    assert all(len(p.train) >= 40 for p in fed.peers)
    assert len(fed.reference) == cfg.data.reference_docs
    assert cfg.strategy == RECOMMENDED_STRATEGY  # no [strategy] table: the default


def test_the_sample_sites_are_what_their_generator_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make = load_script(ROOT / "examples" / "sites" / "make_sites.py", "make_sites")
    monkeypatch.setattr(make, "HERE", tmp_path)
    make.main()
    for name in ("plant-a.txt", "plant-b.txt", "plant-c.txt", "public_reference.txt"):
        assert (tmp_path / name).read_text() == (ROOT / "examples" / "sites" / name).read_text()
