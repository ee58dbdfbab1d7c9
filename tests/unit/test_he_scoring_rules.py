"""The encrypted predictions scorer applies the same distance rule as the plain strategy."""

from __future__ import annotations

import math

import pytest
import torch

from secure_pcft.collab.strategy import make_strategy
from secure_pcft.config import StrategyConfig


@pytest.mark.parametrize("calibrated", [False, True])
def test_predictions_he_row_matches_the_rule_on_chordal_distances(calibrated: bool) -> None:
    # self = peer 1; peer 3 gave no answer (NaN) and must get weight 0
    cosines = torch.tensor([0.9, float("nan"), 0.1, float("nan"), 0.5], dtype=torch.float64)
    cosines[1] = 0.0  # whatever sits at self is replaced by 1 (distance 0)
    strategy = make_strategy(StrategyConfig(name="predictions", options={"calibrated": calibrated}))
    row = strategy.encrypted_row(cosines, self_index=1)

    d = {0: math.sqrt(2 - 2 * 0.9), 1: 0.0, 2: math.sqrt(2 - 2 * 0.1), 4: math.sqrt(2 - 2 * 0.5)}
    if calibrated:
        others = [d[0], d[2], d[4]]
        mean = sum(others) / 3
        std = math.sqrt(sum((x - mean) ** 2 for x in others) / 3)
        score = {j: -4.0 * (v - mean) / std for j, v in d.items()}
        score[1] = score[0]  # self scored like its closest peer
    else:
        total = sum(d.values())
        score = {j: -10.0 * v / total for j, v in d.items()}
    z = sum(math.exp(v) for v in score.values())
    expected = [math.exp(score[j]) / z if j in score else 0.0 for j in range(5)]
    assert row.tolist() == pytest.approx(expected)
    assert float(row[3]) == 0.0
