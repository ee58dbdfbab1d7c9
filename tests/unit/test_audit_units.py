"""Audits in the privacy unit: candidate units, per-unit scores, subject-disjoint non-members."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from secure_pcft.audit.attack import in_unit, membership_result
from secure_pcft.audit.target import cap_units, split_candidates
from secure_pcft.errors import AuditError
from secure_pcft.model.loading import BaseModel
from tests.conftest import tiny_federation


def test_a_units_score_is_the_mean_of_its_blocks_scores() -> None:
    result = membership_result("loss", ("TM-01",), [1.0, 3.0, 5.0, 0.0], [2.0, 4.0, -1.0])
    target: Any = SimpleNamespace(
        unit="document",
        member_units=torch.tensor([0, 0, 1, 1]),  # documents (1, 3) and (5, 0)
        nonmember_units=torch.tensor([0, 1, 1]),  # documents (2) and (4, -1)
    )

    out = in_unit(result, target)

    assert out.member_scores == (2.0, 2.5) and out.nonmember_scores == (2.0, 1.5)
    assert out.metrics["roc_auc"] == pytest.approx(0.875)  # 3 of 4 pairs ordered, a tie counts 1/2
    assert out.details["unit"]["member_blocks"] == 4
    block: Any = SimpleNamespace(unit="block", member_units=None, nonmember_units=None)
    assert in_unit(result, block) is result
    with pytest.raises(AuditError, match="candidate blocks"):
        in_unit(result, SimpleNamespace(**{**vars(target), "member_units": torch.tensor([0, 1])}))


def test_capping_candidates_keeps_whole_units() -> None:
    blocks = torch.arange(12).view(6, 2)
    units = torch.tensor([0, 0, 1, 2, 2, 2])
    kept, renumbered = cap_units(blocks, units, 2, np.random.default_rng(0))
    assert renumbered is not None and sorted(set(renumbered.tolist())) == [0, 1]
    sizes = sorted(torch.bincount(renumbered).tolist())
    assert sizes in ([1, 2], [1, 3], [2, 3])  # two whole documents of 1, 2 or 3 blocks
    assert kept.shape[0] == sum(sizes)
    assert cap_units(blocks, units, 0, np.random.default_rng(0))[0] is blocks


def test_subject_non_members_are_subjects_never_trained_on(tiny_base: BaseModel) -> None:
    peer = tiny_federation().peers[0]
    # train documents by subjects s0..s3; held-out documents by s2..s5: s2, s3 are members
    subjects = {d: f"s{i % 4}" for i, d in enumerate(peer.train)}
    held = (*peer.val, *peer.test)
    subjects.update({d: f"s{2 + i % 4}" for i, d in enumerate(held)})
    peer = dataclasses.replace(peer, subject_of=subjects)

    (members, member_units), (nonmembers, nonmember_units) = split_candidates(
        tiny_base, peer, 8, "subject"
    )

    assert member_units is not None and nonmember_units is not None
    assert int(member_units.max()) + 1 == 4  # s0..s3, all of their training documents
    assert members.shape[0] == member_units.shape[0] >= len(peer.train)
    assert int(nonmember_units.max()) + 1 == 2  # s4 and s5 only
    assert nonmembers.shape[0] < len(held) * 2  # s2's and s3's held-out documents left out
    only_trained = dataclasses.replace(peer, subject_of={d: "s0" for d in (*peer.train, *held)})
    with pytest.raises(AuditError, match="held-out subject"):
        split_candidates(tiny_base, only_trained, 8, "subject")


def test_shadows_of_a_document_target_train_on_whole_population_documents(
    tiny_base: BaseModel,
) -> None:
    from secure_pcft.audit.shadows import shadow_adapters
    from secure_pcft.audit.target import TargetSpec, build_target
    from secure_pcft.config import DataConfig, PrivacyConfig, RunConfig, TrainConfig

    fed = tiny_federation(num_peers=4)  # peers 0 and 3 share domain "a"
    run = RunConfig(
        data=DataConfig(block_size=8),
        train=TrainConfig(batch_size=4, total_steps=2, warmup_steps=0),
        privacy=PrivacyConfig(enabled=True, noise_multiplier=1.0, unit="document"),
    )
    target = build_target(TargetSpec(run=run), tiny_base, fed, seed=0)
    units = target.population_units
    assert units is not None and units.shape == (target.population.shape[0],)
    assert int(units.max()) + 1 == sum(len(d) for d in (fed.peers[3].train, fed.peers[3].val,
                                                          fed.peers[3].test))  # fmt: skip
    (shadow,) = shadow_adapters(target, 1)
    assert shadow.steps == 2
