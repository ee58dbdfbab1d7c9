"""``fedavg``: W_ij = 1/N for every peer (baseline; every peer ends with the same adapter)."""

from __future__ import annotations

import torch

from secure_pcft.collab.strategy import TrustContext, TrustStrategy, register_strategy


@register_strategy
class FedAvgTrust(TrustStrategy):
    name = "fedavg"

    def row(self, ctx: TrustContext) -> torch.Tensor:
        return torch.full((ctx.num_peers,), 1.0 / ctx.num_peers, dtype=torch.float64)
