"""``local``: no collaboration, W_ii = 1 (baseline)."""

from __future__ import annotations

import torch

from secure_pcft.collab.messages import MessageType
from secure_pcft.collab.strategy import TrustContext, TrustStrategy, register_strategy


@register_strategy
class LocalTrust(TrustStrategy):
    name = "local"

    def releases(self, *, secure: bool) -> frozenset[MessageType]:
        return frozenset()  # it shares nothing

    def row(self, ctx: TrustContext) -> torch.Tensor:
        w = torch.zeros(ctx.num_peers, dtype=torch.float64)
        w[ctx.self_index] = 1.0
        return w
