"""The privacy–utility benchmark's core on the tiny fixtures: JSON schema and ε spent ≤ target.

Real DP-SGD (Opacus), real ledgers and the real validation mechanism; only the model and the data
are tiny (conftest.py), so the perplexities mean nothing here — the schema and the budgets do.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType

import pytest

from secure_pcft.config import DataConfig, OutputConfig, RunConfig, SecurityConfig, TrainConfig
from secure_pcft.data.blocks import encode_blocks
from secure_pcft.model.loading import BaseModel
from tests.conftest import load_script, tiny_federation

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "privacy_utility.py"
TRAIN = TrainConfig(batch_size=4, lr=5e-3, warmup_steps=2, local_steps=2, total_steps=6)
# Two peers: each peer's σ calibration is an Opacus RDP search of a few seconds.
EPS = "3"


def _bench() -> ModuleType:
    return load_script(BENCH, "privacy_utility_bench")


def test_core_writes_the_schema_and_no_peer_exceeds_its_target(
    tmp_path: Path, tiny_base: BaseModel
) -> None:
    pu = _bench()
    federation = tiny_federation(num_peers=2)
    cfg = RunConfig(
        data=DataConfig(block_size=16),
        train=TRAIN,
        output=OutputConfig(dir=str(tmp_path / "out")),
    )

    per_seed = {0: pu.run_seed(cfg, federation, tiny_base, [EPS], tmp_path / "ledgers")}
    blocks = encode_blocks(federation.peers[0].train, tiny_base.tokenizer, 16)[:4]
    timing = pu.step_time_ratio(tiny_base, blocks, cfg.lora, steps=2, warmup=0)
    payload = {
        "leipzig-specific": pu.summarise(per_seed, [EPS]),
        "dp_step_time_ratio": timing["ratio"],
    }
    parsed = json.loads(json.dumps(payload, allow_nan=False))  # standard JSON, no NaN/Infinity

    assert set(parsed) == {"leipzig-specific", "dp_step_time_ratio"}
    assert isinstance(parsed["dp_step_time_ratio"], float) and parsed["dp_step_time_ratio"] > 0
    cells = parsed["leipzig-specific"][EPS]
    assert set(cells) == set(pu.SIX)
    for label, row in cells.items():
        assert isinstance(row["test_ppl_mean"], float) and math.isfinite(row["test_ppl_mean"])
        assert row["epsilon_spent_max"] <= float(EPS) + 1e-9, label
        assert row["delta"] == pytest.approx(pu.DELTA)
        for peer in per_seed[0][EPS][label]["peers"].values():
            assert 0 <= peer["epsilon_spent"] <= float(EPS) + 1e-9
            assert peer["epsilon_model"] <= float(EPS) + 1e-9  # even the unreleased final model
    # sharing strategies released something; local released nothing, yet its model is DP
    assert cells["fedavg"]["epsilon_spent_max"] > 0
    assert cells["local"]["epsilon_spent_max"] == 0
    assert cells["local"]["epsilon_model_max"] > 0
    # validation's accounted scores are in its ledgers, inside the same budget
    assert cells["validation"]["epsilon_validation_alone_max"] > 0
    assert not cells["validation"]["any_peer_stopped_sharing"]


def test_strategies_are_grouped_by_privacy_plan_and_cells_keyed_as_documented() -> None:
    pu = _bench()
    secure = RunConfig(security=SecurityConfig(mode="full", select_top_k=3))
    labels = ["local", "validation", "fedavg", "validation-relative-t0.3", "weights"]
    groups = pu.plan_groups(secure, labels, 9)
    assert groups == [
        ("local", "fedavg", "weights"),
        ("validation",),
        ("validation-relative-t0.3",),
    ]
    cell = pu.Cell(pu.REGIMES["n500"], "frozen-a", "full")
    assert cell.key == "leipzig-specific/n500/frozen-a/full"
    # σ_val is calibrated for the plan's queries: fewer candidates (secure top-3) → smaller σ_val
    plain = pu.privacy_for(
        "8", delta=1e-3, scoring_queries=9, train=TRAIN, share=0.25, ledger_dir=Path("x")
    )
    top3 = pu.privacy_for(
        "8", delta=1e-3, scoring_queries=3, train=TRAIN, share=0.25, ledger_dir=Path("x")
    )
    assert top3.validation_noise_multiplier < plain.validation_noise_multiplier
