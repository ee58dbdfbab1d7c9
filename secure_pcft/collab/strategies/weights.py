"""``weights``: trust from the cosine similarity of LoRA parameters (paper: "dynamic" weights).

s_ij = mean over every row of every LoRA matrix of cos(row of peer i, row of peer j);
W_i = softmax(s_i / T) over the (selected) peers, self included.

Secure mode: the encrypted vector is the JL sketch of the adapter with every matrix row scaled to
norm 1/√R (R = rows over all tensors). The inner product of two such (unsketched) vectors is exactly
s_ij whenever no row is all-zero; the sketch adds the JL error (~1/√dim). The row is the same
``softmax(s / T)`` with the same top-k / threshold.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from secure_pcft.collab.strategy import (
    AdapterState,
    Discovery,
    ScoreSoftmaxStrategy,
    TrustContext,
    UnitVector,
    answered,
    register_strategy,
    select_and_softmax,
)
from secure_pcft.crypto.projection import ProjectionSpec, project
from secure_pcft.errors import StrategyError

if TYPE_CHECKING:
    from secure_pcft.collab.peer import Peer


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


def row_normalised(adapter: AdapterState) -> AdapterState:
    """Every matrix row (first dim = rows, as ``rowwise_cosine``) scaled to norm 1/√R."""
    flat = {n: t.detach().to(torch.float64).reshape(t.shape[0], -1) for n, t in adapter.items()}
    rows = sum(x.shape[0] for x in flat.values())
    scale = 1.0 / math.sqrt(max(rows, 1))
    return {n: x / x.norm(dim=1, keepdim=True).clamp_min(1e-12) * scale for n, x in flat.items()}


def weights_vector(adapter: AdapterState, spec: ProjectionSpec) -> UnitVector:
    """Sketch whose inner products estimate the mean row-wise cosine of two adapters."""
    return project(row_normalised(adapter), spec)


@register_strategy
class WeightTrust(ScoreSoftmaxStrategy):
    name = "weights"
    discovery = Discovery.ADAPTERS
    encrypted = True

    def encrypted_vector(
        self, peer: Peer, reference: torch.Tensor, spec: ProjectionSpec
    ) -> UnitVector:
        return weights_vector(peer.adapter(), spec)

    def encrypted_row(self, cosines: torch.Tensor, self_index: int) -> torch.Tensor:
        s = cosines.to(torch.float64).clone()
        s[self_index] = 1.0  # own vector is a unit vector: exact
        s[~answered(cosines, self_index)] = float("-inf")
        return select_and_softmax(
            s / self.cfg.temperature, self_index, self.cfg.top_k, self.cfg.threshold
        )

    def scores(self, ctx: TrustContext) -> torch.Tensor:
        mine = ctx.adapters.get(ctx.self_index)
        if mine is None:
            raise StrategyError("weights strategy needs this peer's own adapter")
        s = torch.full((ctx.num_peers,), float("-inf"), dtype=torch.float64)
        for j, other in ctx.adapters.items():
            s[j] = rowwise_cosine(mine, other)
        return s
