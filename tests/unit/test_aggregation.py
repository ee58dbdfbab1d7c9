"""Aggregation invariants."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from secure_pcft.collab.aggregation import check_row, weighted_average
from secure_pcft.errors import StrategyError


def states(n: int, seed: int = 0) -> dict[int, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return {
        j: {"A": torch.randn(2, 3, generator=g), "B": torch.randn(3, 2, generator=g)}
        for j in range(n)
    }


def test_local_row_changes_nothing() -> None:
    s = states(3)
    out = weighted_average(s, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    assert all(torch.equal(out[k], s[1][k]) for k in s[1])


def test_fedavg_makes_all_peers_equal() -> None:
    s = states(4)
    row = torch.full((4,), 0.25, dtype=torch.float64)
    outs = [weighted_average(s, row) for _ in range(4)]
    mean_a = torch.stack([s[j]["A"] for j in range(4)]).mean(0)
    assert torch.allclose(outs[0]["A"], mean_a, atol=1e-6)
    assert all(torch.equal(o["A"], outs[0]["A"]) for o in outs)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.01, 10.0), min_size=3, max_size=6), st.randoms(use_true_random=False))
def test_permuting_peers_permutes_results(raw: list[float], rnd) -> None:  # type: ignore[no-untyped-def]
    n = len(raw)
    s = states(n, seed=n)
    row = torch.tensor(raw, dtype=torch.float64)
    row = row / row.sum()
    perm = list(range(n))
    rnd.shuffle(perm)
    permuted_states = {i: s[perm[i]] for i in range(n)}
    permuted_row = row[perm]
    a, b = weighted_average(s, row), weighted_average(permuted_states, permuted_row)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_missing_trusted_adapter_is_an_error() -> None:
    s = states(2)
    with pytest.raises(StrategyError):
        weighted_average(s, torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64))


@pytest.mark.parametrize("row", [[0.5, 0.6], [1.5, -0.5], [float("nan"), 1.0]])
def test_invalid_rows_are_rejected(row: list[float]) -> None:
    with pytest.raises(StrategyError):
        check_row(torch.tensor(row, dtype=torch.float64), 2)
