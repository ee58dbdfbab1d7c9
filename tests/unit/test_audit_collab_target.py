"""Collaboration-trained audit targets: the adapter a peer released in a real simulation round,
attacked with the adapter a same-domain peer released in that round (``reference = "peer"``)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from secure_pcft.audit import TargetSpec, build_target, campaign_from_dict, make_attack
from secure_pcft.audit.collab_target import CollaborationSpec, build_collaboration_target
from secure_pcft.audit.target import AuditTarget
from secure_pcft.collab.strategy import make_strategy
from secure_pcft.config import LoraSettings, OutputConfig, PrivacyConfig, StrategyConfig
from secure_pcft.errors import AuditError, ConfigError
from secure_pcft.model.loading import BaseModel, load_base
from secure_pcft.model.lora import adapter_state
from secure_pcft.runtime.loopback import Simulation
from tests.unit.test_audit_attacks import audit_base_dir, audit_federation, run_config

FEDAVG = CollaborationSpec(strategy="fedavg")


def collab_run(*, dp_epsilon: float | None = None, local: int = 20) -> TargetSpec:
    run = run_config(dp_epsilon=dp_epsilon, steps=4 + 2 * local, batch=16)
    run = dataclasses.replace(
        run,
        lora=LoraSettings(r=8, dropout=0.0, mode="shared-init"),
        train=dataclasses.replace(run.train, warmup_steps=4, local_steps=local),
    )
    return TargetSpec(run=run, peer="p0")


@pytest.fixture(scope="module")
def base() -> BaseModel:
    return load_base(audit_base_dir())


@pytest.fixture(scope="module")
def nondp(base: BaseModel) -> AuditTarget:
    return build_collaboration_target(collab_run(), FEDAVG, base, audit_federation(), seed=5)


def test_the_target_is_the_adapter_released_in_the_last_round_not_the_aggregate(
    base: BaseModel, nondp: AuditTarget, tmp_path: object
) -> None:
    spec = collab_run()
    cfg = dataclasses.replace(
        spec.run,
        strategy=StrategyConfig(name="fedavg"),
        train=dataclasses.replace(spec.run.train, seed=5),
        output=OutputConfig(dir=str(tmp_path)),
    )
    sim = Simulation(cfg, audit_federation(), base)
    sim.warmup()
    sim.local_phase()
    sim.round(make_strategy(cfg.strategy), 1, trained=True, evaluate=False)
    sim.local_phase()
    sent = [p.adapter() for p in sim.peers]  # round 2: what p0 and p1 send
    sim.round(make_strategy(cfg.strategy), 2, trained=True, evaluate=False)
    aggregate = sim.peers[0].adapter()

    target = adapter_state(nondp.model)
    assert all(torch.equal(target[k], sent[0][k]) for k in target)
    assert not all(torch.allclose(target[k], aggregate[k]) for k in target)
    peer = nondp.peer_adapters["p1"]  # the attacker's: p1's round-2 release
    assert all(torch.equal(peer[k], sent[1][k]) for k in peer)
    assert nondp.notes["collaboration"] == "fedavg" and nondp.notes["rounds"] == 2
    assert math.isinf(nondp.epsilon)


def test_the_peer_reference_attack_finds_membership_in_a_non_dp_release(
    nondp: AuditTarget,
) -> None:
    result = make_attack("reference", reference="peer").run(nondp, np.random.default_rng(0))
    base_ref = make_attack("reference", reference="base").run(nondp, np.random.default_rng(0))
    assert result.metrics["n_members"] == nondp.members.shape[0] > 0
    assert result.metrics["roc_auc"] > 0.7, result.metrics
    assert result.metrics["roc_auc_ci_low"] <= result.metrics["roc_auc"]
    assert 0.0 <= base_ref.metrics["roc_auc"] <= 1.0


def test_a_dp_collaboration_target_reports_the_ledger_epsilon(base: BaseModel) -> None:
    target = build_collaboration_target(
        collab_run(dp_epsilon=2.0, local=4), FEDAVG, base, audit_federation(), seed=6
    )
    assert 0.5 < target.epsilon <= 2.0 + 1e-6  # what the released adapter cost, ≤ the target
    assert target.delta is not None and 0 < target.delta < 1
    assert float(target.notes["noise_multiplier"]) > 0  # type: ignore[arg-type]


def test_peer_reference_needs_a_collaboration_target(base: BaseModel) -> None:
    alone = build_target(TargetSpec(run=run_config(steps=2, batch=8)), base, audit_federation(), 1)
    with pytest.raises(AuditError, match="collaboration"):
        make_attack("reference", reference="peer").run(alone, np.random.default_rng(0))


def test_collaboration_campaign_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="strategy"):
        CollaborationSpec(strategy="no-such-rule")
    raw = {
        "campaign": {"name": "c", "threat_models": ["TM-01"]},
        "target": {"collaboration": {"strategy": "fedavg"}, "update": {}},
        "attacks": [{"name": "loss"}],
    }
    with pytest.raises(ConfigError, match="collaboration"):
        campaign_from_dict(raw)
    raw["target"] = {"collaboration": {"strategy": "weights-top3"}}
    campaign = campaign_from_dict(raw)
    assert campaign.collaboration == CollaborationSpec(strategy="weights-top3")
    with pytest.raises(ConfigError, match="reference"):
        make_attack("reference", reference="neighbour")


def test_a_collaboration_target_refuses_canaries_and_zero_rounds(base: BaseModel) -> None:
    from secure_pcft.audit import CanarySpec

    spec = dataclasses.replace(collab_run(), canaries=CanarySpec(count=2))
    with pytest.raises(ConfigError, match="canaries"):
        build_collaboration_target(spec, FEDAVG, base, audit_federation(), seed=0)
    run = run_config(steps=4, batch=8)  # warm-up 0, local_steps default: rounds from total_steps
    no_rounds = TargetSpec(
        run=dataclasses.replace(
            run, train=dataclasses.replace(run.train, warmup_steps=4, total_steps=4)
        ),
        peer="p0",
    )
    with pytest.raises(ConfigError, match="round"):
        build_collaboration_target(no_rounds, FEDAVG, base, audit_federation(), seed=0)
    assert PrivacyConfig().enabled is False
