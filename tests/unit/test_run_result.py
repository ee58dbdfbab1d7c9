"""The one builder of a run's results (both runtimes): what a compliance report relies on."""

from __future__ import annotations

import json

import pytest

from secure_pcft.collab.results import RoundRecord, RunResult
from secure_pcft.config import PrivacyConfig, RunConfig, SecurityConfig
from secure_pcft.errors import PrivacyError


def _assemble(cfg: RunConfig, **facts: object) -> RunResult:
    return RunResult.assemble(
        cfg,
        label="fedavg",
        peer_ids=["a", "b"],
        base_model="tiny",
        data="two peers",
        rounds=[RoundRecord(0, 0, [10.0, 12.0], [0.1, 0.2])],
        rejections={"a": [{"reason": "replay"}]},
        kept=[{}, {}],
        seconds=1.5,
        started_at="2026-12-06T00:00:00+00:00",
        **facts,  # type: ignore[arg-type]
    )


def test_results_carry_the_config_its_hash_and_every_peer_in_order() -> None:
    cfg = RunConfig()
    res = _assemble(cfg, security={"mode": "full"})
    assert res.config == cfg.to_dict() and res.config_hash == cfg.digest()
    assert res.rejections == {"a": [{"reason": "replay"}], "b": []}
    assert "security" not in res.extra  # security off: no security section, whatever was given
    assert res.versions and res.finished_at
    assert json.loads(json.dumps(res.to_dict()))["summary"]["strategy"] == "fedavg"


def test_a_dp_run_cannot_be_written_without_its_privacy_facts() -> None:
    cfg = RunConfig(privacy=PrivacyConfig(enabled=True, target_epsilon=8.0))
    with pytest.raises(PrivacyError, match="privacy summaries and receipts"):
        _assemble(cfg)
    with pytest.raises(PrivacyError):
        _assemble(cfg, privacy={"a": {"epsilon_spent": 1.0}})  # receipts missing
    res = _assemble(
        cfg, privacy={"a": {"epsilon_spent": 1.0}, "b": {"epsilon_spent": 2.0}},
        receipts={"a": ["r1"]},
    )  # fmt: skip
    assert res.extra["privacy"] == {"a": {"epsilon_spent": 1.0}, "b": {"epsilon_spent": 2.0}}
    assert res.extra["receipts"] == {"a": ["r1"], "b": []}


def test_secure_mode_results_carry_the_security_log() -> None:
    cfg = RunConfig(security=SecurityConfig(mode="full"))
    assert _assemble(cfg, security={"mode": "full"}).extra["security"] == {"mode": "full"}
