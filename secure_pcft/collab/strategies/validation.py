"""``validation``: W_ij = softmax_j(−perplexity of peer j's adapter on peer i's validation split).

The paper's rule uses temperature 1 on the perplexity scale. ``relative = true`` scores the mean
per-block loss gap to the own adapter instead, W_ij = softmax_j(−gap_ij / T) with T in nats and
gap_ii = 0 (no query): under DP its accounted mechanism has a 2c/n sensitivity instead of C/n
(privacy/validation_scores.py), which is what makes the scores informative at ε ≤ 8. Peer i's validation split is private,
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

    def private_scores(self, held: int) -> int:
        # relative: the own adapter's gap is 0 by definition, so it is not a query
        return held - 1 if self.cfg.relative else held

    def scores(self, ctx: TrustContext) -> torch.Tensor:
        s = torch.full((ctx.num_peers,), float("-inf"), dtype=torch.float64)
        if self.cfg.relative:
            if ctx.validation_gap is None:
                raise StrategyError("relative validation needs the peer's validation gap scorer")
            s[ctx.self_index] = 0.0
            for j, state in ctx.adapters.items():
                if j != ctx.self_index:
                    s[j] = -ctx.validation_gap(state)
            return s
        if ctx.validation_perplexity is None:
            raise StrategyError("validation strategy needs the peer's validation scorer")
        for j, state in ctx.adapters.items():
            s[j] = -ctx.validation_perplexity(state)
        return s
