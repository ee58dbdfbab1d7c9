"""benchmarks/scale.py: every case writes a configuration the toolkit accepts, with the strategy
and security mode the case names (a typo in a case would otherwise surface after an hour's run)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from secure_pcft.config import load_config
from tests.conftest import load_script

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def scale():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(BENCH))  # the script imports its sibling _common
    try:
        yield load_script(BENCH / "scale.py", "bench_scale")
    finally:
        sys.path.remove(str(BENCH))


EXPECTED = {
    "loopback": ("fedavg", "off", None),
    "flower-simulation": ("fedavg", "off", None),
    "loopback-weights": ("weights", "off", None),
    "loopback-secure": ("weights", "full", None),
    "loopback-validation": ("validation", "off", None),
    "loopback-validation-cand4": ("validation", "off", 4),
}


def test_cases_are_the_documented_ones(scale) -> None:  # type: ignore[no-untyped-def]
    assert set(scale.CASES) == set(EXPECTED)
    for name, (_, _, baseline) in scale.CASES.items():
        assert baseline is None or baseline in scale.CASES, name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_case_config_loads(scale, name: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, tables, _ = scale.CASES[name]
    path = tmp_path / "run.toml"
    path.write_text(scale.run_toml(16, tmp_path / "out", tables))
    cfg = load_config(path)
    strategy, mode, candidates = EXPECTED[name]
    assert cfg.strategy.name == strategy
    assert cfg.security.mode == mode
    assert cfg.data.num_peers == 16
    assert cfg.train.num_rounds == scale.ROUNDS
    if candidates is not None:
        assert cfg.strategy.options["candidates"] == candidates
