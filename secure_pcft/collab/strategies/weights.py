"""``weights``: trust from the cosine similarity of LoRA parameters (paper: "dynamic" weights).

s_ij = mean over every row of every LoRA matrix of cos(row of peer i, row of peer j);
W_i = softmax(s_i / T) over the (selected) peers, self included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from secure_pcft.collab.strategy import (
    AdapterState,
    Discovery,
    ScoreSoftmaxStrategy,
    TrustContext,
    register_strategy,
)
from secure_pcft.errors import StrategyError


def rowwise_cosine(a: AdapterState, b: AdapterState) -> float:
    """Mean row-wise cosine similarity over all tensors of two adapters (same names/shapes)."""
    if a.keys() != b.keys():
        raise StrategyError("adapters have different tensors")
    total, rows = 0.0, 0
    for name in sorted(a):
        x, y = a[name].to(torch.float64), b[name].to(torch.float64)
        x2, y2 = x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)  # (rows, cols)
        total += float(F.cosine_similarity(x2, y2, dim=1, eps=1e-12).sum())
        rows += x2.shape[0]
    return total / max(rows, 1)


@register_strategy
class WeightTrust(ScoreSoftmaxStrategy):
    name = "weights"
    discovery = Discovery.ADAPTERS

    def scores(self, ctx: TrustContext) -> torch.Tensor:
        mine = ctx.adapters.get(ctx.self_index)
        if mine is None:
            raise StrategyError("weights strategy needs this peer's own adapter")
        s = torch.full((ctx.num_peers,), float("-inf"), dtype=torch.float64)
        for j, other in ctx.adapters.items():
            s[j] = rowwise_cosine(mine, other)
        return s
