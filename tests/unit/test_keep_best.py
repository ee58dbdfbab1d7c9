"""The kept model: the best a peer has seen on its validation split, never displacing its starting
point without paired evidence."""

from __future__ import annotations

import pytest
import torch

from secure_pcft.collab.acceptance import candidate_rows
from secure_pcft.collab.keep_best import KeptModel, Seen, base_adapter, paired_gain, supported


def seen(losses: list[float], origin: str, rnd: int = 0) -> Seen:
    return Seen({"w.lora_B.weight": torch.ones(2)}, torch.tensor(losses), origin, rnd)


def test_the_base_adapter_zeroes_every_b_and_keeps_a() -> None:
    state = {"l.lora_A.weight": torch.ones(2, 3), "l.lora_B.weight": torch.ones(3, 2)}

    base = base_adapter(state)

    assert torch.equal(base["l.lora_A.weight"], state["l.lora_A.weight"])
    assert torch.count_nonzero(base["l.lora_B.weight"]) == 0
    assert torch.count_nonzero(state["l.lora_B.weight"]) == 6  # the original is untouched


def test_paired_evidence_resolves_a_consistent_small_gain_but_not_noise() -> None:
    reference = torch.tensor([3.0, 1.0, 5.0, 2.0, 4.0, 2.5])  # blocks differ a lot
    consistent = reference - 0.05  # 0.05 nats better on every block
    noisy = reference + torch.tensor([-0.4, 0.3, -0.3, 0.35, -0.2, 0.1])  # mean −0.025

    assert paired_gain(consistent, reference)[0] == pytest.approx(-0.05)
    assert supported(consistent, reference)
    assert not supported(noisy, reference)
    assert not supported(reference, reference)


def test_the_start_is_the_base_unless_the_warm_up_is_supported() -> None:
    kept = KeptModel()
    start = kept.begin(seen([2.0, 2.1, 1.9], "base"), seen([2.2, 1.8, 2.0], "warm-up"))
    assert start.origin == "base"  # no consistent gain: stay with the untouched base

    kept = KeptModel()
    start = kept.begin(seen([2.0, 2.1, 1.9], "base"), seen([1.8, 1.9, 1.7], "warm-up"))
    assert start.origin == "warm-up" and kept.kept is start


def test_offers_keep_the_best_supported_and_never_a_worse_one() -> None:
    kept = KeptModel()
    kept.begin(seen([2.0, 2.0, 2.0, 2.0], "base"), seen([1.0, 1.0, 1.0, 1.0], "warm-up"))

    assert not kept.offer(seen([1.5, 1.5, 1.5, 1.5], "round 1: trust", 1))  # worse than start
    assert kept.offer(seen([0.9, 0.8, 0.95, 0.85], "round 1: uniform", 1))
    assert not kept.offer(seen([0.95, 0.9, 0.9, 0.9], "round 2: self", 2))  # not the best
    assert not kept.offer(seen([0.2, 1.9, 0.3, 1.4], "round 2: trust", 2))  # lucky, unsupported
    assert kept.kept.origin == "round 1: uniform" and kept.start is not None
    assert kept.start.origin == "warm-up"


def test_candidate_rows_renormalise_over_what_arrived_and_nest_by_rank() -> None:
    row = torch.tensor([0.4, 0.3, 0.3, 0.0, 0.0], dtype=torch.float64)

    # peer 1 declined; 3 and 4 were asked wide; the ranking puts 3 before 2 before 4
    rows = candidate_rows(row, {0, 2, 3, 4}, 0, ranking=[3, 1, 2, 4])

    f64 = torch.float64
    assert list(rows) == ["self", "trust", "nearest-1", "nearest-2", "nearest-3"]
    assert torch.allclose(rows["self"], torch.tensor([1.0, 0, 0, 0, 0], dtype=f64))
    assert torch.allclose(rows["trust"], torch.tensor([4 / 7, 0, 3 / 7, 0, 0], dtype=f64))
    assert torch.allclose(rows["nearest-1"], torch.tensor([0.5, 0, 0, 0.5, 0], dtype=f64))
    assert torch.allclose(rows["nearest-2"], torch.tensor([1, 0, 1, 1, 0], dtype=f64) / 3)
    assert torch.allclose(rows["nearest-3"], torch.tensor([1, 0, 1, 1, 1], dtype=f64) / 4)
    alone = candidate_rows(row, {0}, 0, ranking=[1, 2])  # nothing arrived: one candidate
    assert list(alone) == ["self"]
    same = candidate_rows(torch.tensor([0.5, 0.5], dtype=f64), {0, 1}, 0, ranking=[1])
    assert list(same) == ["self", "trust"]  # nearest-1 equals trust: scored once
