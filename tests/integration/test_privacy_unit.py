"""[privacy] unit = document / subject end to end: units sampled, accounted, scored and named.

A real DP run on the tiny base: every peer's ledger, results, the report and the adapter's model
card say which unit (ε, δ) protects; δ and the sampling rate count units; the validation scores
average per unit; data that names no subject is refused before any model loads.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jsonschema
import pytest

from secure_pcft.collab.strategy import make_strategy
from secure_pcft.config import (
    DataConfig,
    OutputConfig,
    PrivacyConfig,
    RunConfig,
    TrainConfig,
)
from secure_pcft.data.corpus import Federation
from secure_pcft.data.settings import check_unit_data
from secure_pcft.errors import DataError
from secure_pcft.model.export import model_card
from secure_pcft.model.loading import BaseModel
from secure_pcft.privacy.ledger import ledger_path, read_ledger
from secure_pcft.report import REPORT_SCHEMA, build_report, render_html
from secure_pcft.runtime.loopback import Simulation
from tests.conftest import quick_strategy, tiny_federation

TRAIN = TrainConfig(
    batch_size=2, lr=5e-3, warmup_steps=2, local_steps=2, total_steps=6, eval_batches=2
)
SUBJECTS = 4  # documents j of every split belong to subject j mod 4


def with_subjects(fed: Federation) -> Federation:
    peers = tuple(
        dataclasses.replace(
            p,
            subject_of={
                doc: f"{p.peer_id}/s{j % SUBJECTS}"
                for split in (p.train, p.val, p.test)
                for j, doc in enumerate(split)
            },
        )
        for p in fed.peers
    )
    return dataclasses.replace(fed, peers=peers)


def unit_run(tmp: Path, base: BaseModel, unit: str, strategy: str) -> tuple[Simulation, Path]:
    cfg = RunConfig(
        data=DataConfig(block_size=8),  # most sentences take two blocks
        train=TRAIN,
        strategy=quick_strategy(strategy),
        privacy=PrivacyConfig(
            enabled=True,
            noise_multiplier=1.0,
            budget_epsilon=100.0,
            unit=unit,  # type: ignore[arg-type]
        ),
        output=OutputConfig(dir=str(tmp / "out")),
    )
    sim = Simulation(cfg, with_subjects(tiny_federation()), base)
    sim.warmup()
    strategy_obj = make_strategy(cfg.strategy)
    sim.run_rounds(strategy_obj)
    sim.result(strategy_obj, 1.0).write_json(tmp / "out" / "results.json")
    return sim, tmp / "out"


@pytest.mark.parametrize(("unit", "strategy"), [("document", "weights"), ("subject", "validation")])
def test_a_run_samples_accounts_and_names_its_unit(
    tmp_path: Path, tiny_base: BaseModel, unit: str, strategy: str
) -> None:
    sim, out = unit_run(tmp_path, tiny_base, unit, strategy)
    try:
        fed = tiny_federation()
        result = sim.result(make_strategy(sim.cfg.strategy), 1.0)
        for peer, corpus in zip(sim.peers, fed.peers, strict=True):
            trainer = peer.privacy.trainer  # type: ignore[union-attr]
            units = SUBJECTS if unit == "subject" else len(corpus.train)
            blocks = int(peer.blocks.train.shape[0])
            assert blocks > units  # several blocks per unit: the unit is coarser than a block
            assert (trainer.num_units, trainer.sample_rate) == (units, TRAIN.batch_size / units)
            assert trainer.delta == 1 / (10 * units)
            # validation scores average per unit: n = validation documents (or subjects)
            val_units = SUBJECTS if unit == "subject" else len(corpus.val)
            assert peer.selection.val_blocks == val_units
            assert peer.val_losses(peer.adapter()).shape == (val_units,)
            genesis = read_ledger(ledger_path(out / "ledgers", peer.peer_id)).genesis
            assert genesis.unit == unit
            info = result.extra["privacy"][peer.peer_id]
            assert (info["unit"], info["train_units"], info["train_blocks"]) == (
                unit,
                units,
                blocks,
            )
            if strategy == "validation":
                events = read_ledger(ledger_path(out / "ledgers", peer.peer_id)).events
                assert any(e.mechanism == "gaussian-validation" for e in events)
    finally:
        sim.close()
    report = build_report(out, [])
    jsonschema.validate(report.document, REPORT_SCHEMA)
    assert f"<td>{unit}</td>" in render_html(report.document)  # the privacy table names it
    for p in report.document["peers"]:
        assert p["privacy"]["unit"] == unit
    expected = "one data subject" if unit == "subject" else "one document"
    assert report.document["scope"]["privacy_unit"].startswith(expected)
    assert f"training {unit}s" in report.document["scope"]["delta"]
    card = model_card(
        {"name": "tiny"}, {"peer": "peer-0", "privacy": result.extra["privacy"]["peer-0"]}
    )
    assert ("one data subject" if unit == "subject" else "one document of the peer") in card


def test_the_subject_unit_refuses_data_that_names_no_subject() -> None:
    fed = tiny_federation()
    with pytest.raises(DataError, match="name no data subject"):
        check_unit_data("subject", fed)
    check_unit_data("subject", with_subjects(fed))
    check_unit_data("document", fed)  # documents need no names


def test_secure_pcft_run_refuses_a_subject_run_on_text_that_names_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from secure_pcft.cli import main

    root = Path(__file__).resolve().parents[2]
    config = (root / "examples" / "configs" / "own_files.toml").read_text(encoding="utf-8")
    config = config.replace('"examples/', f'"{root}/examples/')
    path = tmp_path / "subject.toml"
    path.write_text(config + '\n[privacy]\nunit = "subject"\n', encoding="utf-8")

    assert main(["run", str(path), "--output", str(tmp_path / "out")]) == 3
    assert "name no data subject" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything was written
