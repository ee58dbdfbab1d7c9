"""The ``logprob-shift`` prediction signature: known answers, the rule, and malformed input."""

from __future__ import annotations

import math

import pytest
import torch

from secure_pcft.collab.strategies.predictions import (
    check_signature,
    logprob_shift,
    prediction_signature,
    shift_distance,
    shift_signature,
)
from secure_pcft.collab.strategy import (
    TrustContext,
    make_strategy,
    strategy_from_label,
    strategy_label,
)
from secure_pcft.config import StrategyConfig
from secure_pcft.crypto.projection import ProjectionSpec
from secure_pcft.errors import ConfigError, StrategyError

SPEC = ProjectionSpec(seed=7, dim=512)


def test_shift_is_log_softmax_difference_and_ignores_a_per_row_logit_offset() -> None:
    base = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]])
    adapted = base + torch.tensor([[5.0], [-3.0]])  # the same distribution, shifted logits
    assert torch.allclose(logprob_shift(adapted, base), torch.zeros(2, 3, dtype=torch.float64))
    moved = torch.tensor([[0.0, 1.0, 3.0], [1.0, 1.0, 1.0]])
    want = torch.log_softmax(moved.double(), -1) - torch.log_softmax(base.double(), -1)
    assert torch.allclose(logprob_shift(moved, base), want)


def test_untrained_adapter_has_no_shift_signature() -> None:
    base = torch.randn(4, 50)
    with pytest.raises(StrategyError, match="train before scoring"):
        shift_signature(base.clone(), base, SPEC)


def test_shift_distance_known_answers() -> None:
    e = torch.eye(3, dtype=torch.float64)
    a, b = {"shift": e[0]}, {"shift": e[1]}
    assert shift_distance(a, a) == 0.0
    assert shift_distance(a, b) == pytest.approx(math.sqrt(2.0))
    assert shift_distance(a, {"shift": -e[0]}) == pytest.approx(2.0)


def test_shift_rule_groups_peers_whose_adapters_move_the_same_tokens() -> None:
    # Two domains: each adapter raises its own domain's tokens on top of a large common base and
    # independent noise; the raw top-logits angle is dominated by the base, the shift is not.
    g = torch.Generator().manual_seed(0)
    base = 8.0 * torch.randn(16, 200, generator=g)
    domain = [torch.zeros(200), torch.zeros(200)]
    domain[0][:20], domain[1][20:40] = 1.0, 1.0
    logits = [base + domain[i % 2] + 0.3 * torch.randn(16, 200, generator=g) for i in range(6)]
    sigs = {i: shift_signature(x, base, SPEC) for i, x in enumerate(logits)}
    strategy = make_strategy(
        StrategyConfig(
            name="predictions", top_k=3, options={"signature": "logprob-shift", "calibrated": True}
        )
    )
    for i in range(6):
        row = strategy.row(TrustContext(i, tuple(f"p{k}" for k in range(6)), signatures=sigs))
        chosen = {j for j in range(6) if j != i and float(row[j]) > 0}
        assert chosen == {j for j in range(6) if j != i and j % 2 == i % 2}


def test_encrypted_row_equals_the_plain_row_on_the_same_unit_vectors() -> None:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(8, 64, generator=g)
    sigs = {
        i: shift_signature(base + torch.randn(8, 64, generator=g), base, SPEC) for i in range(5)
    }
    cfg = StrategyConfig(
        name="predictions", options={"signature": "logprob-shift", "calibrated": True}
    )
    strategy = make_strategy(cfg)
    ids = tuple(f"p{k}" for k in range(5))
    for i in range(5):
        plain = strategy.row(TrustContext(i, ids, signatures=sigs))
        cos = torch.stack([sigs[i]["shift"] @ sigs[j]["shift"] for j in range(5)])
        assert torch.allclose(strategy.encrypted_row(cos, i), plain, atol=1e-9)


def test_a_peer_that_sent_the_other_signature_kind_gets_no_weight() -> None:
    base = torch.randn(4, 120)
    shift = {i: shift_signature(base + torch.randn(4, 120), base, SPEC) for i in range(3)}
    sigs = {**shift, 3: prediction_signature(torch.randn(4, 120))}
    strategy = make_strategy(
        StrategyConfig(name="predictions", options={"signature": "logprob-shift"})
    )
    row = strategy.row(TrustContext(0, tuple(f"p{k}" for k in range(4)), signatures=sigs))
    assert float(row[3]) == 0.0 and float(row[:3].sum()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "sig",
    [
        {"shift": torch.ones(8, dtype=torch.float64)},  # not a unit vector
        {"shift": torch.full((4,), float("nan"))},
        {"shift": torch.eye(2, dtype=torch.float64)},  # not 1-D
        {"shift": torch.tensor([1, 0, 0])},  # not float
        {"shift": torch.eye(3)[0], "extra": torch.zeros(1)},
        {"indices": torch.zeros(2, 3, dtype=torch.int64)},
        {"indices": torch.zeros(2, 3, dtype=torch.int64), "values": torch.zeros(2, 4)},
        {"indices": -torch.ones(2, 3, dtype=torch.int64), "values": torch.zeros(2, 3)},
        {"indices": torch.zeros(2, 3, dtype=torch.int64), "values": torch.full((2, 3), math.inf)},
    ],
)
def test_malformed_signatures_are_refused_with_a_typed_error(sig: dict[str, torch.Tensor]) -> None:
    with pytest.raises(StrategyError):
        check_signature(sig)


def test_well_formed_signatures_pass_the_check() -> None:
    check_signature(prediction_signature(torch.randn(3, 200)))
    check_signature(shift_signature(torch.randn(3, 50), torch.randn(3, 50), SPEC))


def test_signature_option_label_and_validation() -> None:
    cfg = StrategyConfig(
        name="predictions", top_k=3, options={"signature": "logprob-shift", "calibrated": True}
    )
    assert strategy_label(cfg) == "predictions-shift-calibrated-top3"
    assert strategy_from_label("predictions-shift-calibrated-t10-top3") == StrategyConfig(
        name="predictions",
        temperature=10.0,
        top_k=3,
        options={"signature": "logprob-shift", "calibrated": True},
    )
    with pytest.raises(ConfigError, match="signature"):
        make_strategy(StrategyConfig(name="weights", options={"signature": "logprob-shift"}))
    with pytest.raises(ConfigError, match="signature"):
        make_strategy(StrategyConfig(name="predictions", options={"signature": "logits"}))
