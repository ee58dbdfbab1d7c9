"""``oracle``: weights from the known domain mix of the split (upper reference, simulation only).

W_ij ∝ m_i · m_j, where m_i is peer i's vector of domain proportions (the paper's static weights:
equal weight on same-domain peers for the specific split).
"""

from __future__ import annotations

import torch

from secure_pcft.collab.strategy import TrustContext, TrustStrategy, register_strategy
from secure_pcft.errors import StrategyError


@register_strategy
class OracleTrust(TrustStrategy):
    name = "oracle"

    def row(self, ctx: TrustContext) -> torch.Tensor:
        if len(ctx.domain_mixes) != ctx.num_peers or not all(ctx.domain_mixes):
            raise StrategyError("oracle needs the known domain mix of every peer")
        mine = ctx.domain_mixes[ctx.self_index]
        w = torch.tensor(
            [sum(mine.get(d, 0.0) * p for d, p in other.items()) for other in ctx.domain_mixes],
            dtype=torch.float64,
        )
        return w / w.sum()
