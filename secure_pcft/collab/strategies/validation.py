"""``validation``: W_ij = softmax_j(−perplexity of peer j's adapter on peer i's validation split).

The paper's rule uses temperature 1 on the perplexity scale. Peer i's validation split is private,
so the weights it derives are a function of private data (see docs/design.md, privacy closure).
"""

from __future__ import annotations

import torch

from secure_pcft.collab.strategy import (
    Discovery,
    ScoreSoftmaxStrategy,
    TrustContext,
    register_strategy,
)
from secure_pcft.errors import StrategyError


@register_strategy
class ValidationTrust(ScoreSoftmaxStrategy):
    name = "validation"
    discovery = Discovery.ADAPTERS
    private_scoring = True

    def scores(self, ctx: TrustContext) -> torch.Tensor:
        if ctx.validation_perplexity is None:
            raise StrategyError("validation strategy needs the peer's validation scorer")
        s = torch.full((ctx.num_peers,), float("-inf"), dtype=torch.float64)
        for j, state in ctx.adapters.items():
            s[j] = -ctx.validation_perplexity(state)
        return s
