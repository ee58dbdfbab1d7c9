"""Personalised aggregation: θ_i ← Σ_j W_ij θ_j, for every LoRA tensor separately."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from secure_pcft.errors import StrategyError

AdapterState = dict[str, torch.Tensor]


def check_row(row: torch.Tensor, n: int) -> None:
    """Raise StrategyError unless ``row`` is a length-n probability vector."""
    if row.shape != (n,):
        raise StrategyError(f"trust row has shape {tuple(row.shape)}, expected ({n},)")
    if not torch.isfinite(row).all() or bool((row < 0).any()):
        raise StrategyError("trust row must be finite and non-negative")
    if abs(float(row.sum()) - 1.0) > 1e-6:
        raise StrategyError(f"trust row sums to {float(row.sum()):.6f}, not 1")


def weighted_average(states: Mapping[int, AdapterState], row: torch.Tensor) -> AdapterState:
    """Average adapter states with the weights ``row`` (indexed like ``states``' keys).

    Peers with weight 0 need not be present in ``states``; every peer with a positive weight must be.
    A and B matrices are averaged separately, exactly as the paper does.

    Raises:
        StrategyError: a weighted peer's adapter is missing, or tensors do not match.
    """
    check_row(row, row.shape[0])
    used = [j for j in range(row.shape[0]) if float(row[j]) > 0]
    missing = [j for j in used if j not in states]
    if missing:
        raise StrategyError(f"no adapter from peer index(es) {missing} with positive trust")
    names = states[used[0]].keys()
    out: AdapterState = {}
    for name in names:
        ref = states[used[0]][name]
        acc = torch.zeros_like(ref, dtype=torch.float64)
        for j in used:
            t = states[j].get(name)
            if t is None or t.shape != ref.shape:
                raise StrategyError(f"adapter of peer index {j} does not match tensor {name}")
            acc += float(row[j]) * t.to(torch.float64)
        out[name] = acc.to(ref.dtype)
    return out
