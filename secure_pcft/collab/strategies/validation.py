"""``validation``: W_ij = softmax_j(−perplexity of peer j's adapter on peer i's validation split).

The paper's rule uses temperature 1 on the perplexity scale. ``relative = true`` scores the mean
per-block loss gap to the own adapter instead, W_ij = softmax_j(−gap_ij / T) with T in nats and
gap_ii = 0 (no query): under DP its accounted mechanism has a 2c/n sensitivity instead of C/n
(privacy/validation_scores.py), which is what makes the scores informative at ε ≤ 8. Peer i's validation split is private,
so the weights it derives are a function of private data (see docs/design.md, privacy closure).

Secure mode: discovery and selection use the ``weights`` vector (encrypted weight cosines); the
trust row itself is this strategy's, computed after the exchange on the adapters received.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from secure_pcft.collab.strategies.weights import weights_vector
from secure_pcft.collab.strategy import (
    Discovery,
    ScoreSoftmaxStrategy,
    TrustContext,
    UnitVector,
    answered,
    register_strategy,
)
from secure_pcft.crypto.projection import ProjectionSpec
from secure_pcft.errors import StrategyError

if TYPE_CHECKING:
    from secure_pcft.collab.peer import Peer


@register_strategy
class ValidationTrust(ScoreSoftmaxStrategy):
    name = "validation"
    discovery = Discovery.ADAPTERS
    encrypted = True
    rescore_after_exchange = True

    def encrypted_vector(
        self, peer: Peer, reference: torch.Tensor, spec: ProjectionSpec
    ) -> UnitVector:
        return weights_vector(peer.adapter(), spec)

    def encrypted_row(self, cosines: torch.Tensor, self_index: int) -> torch.Tensor:
        # Uniform over the peers that answered: only the support matters (who may be asked);
        # this strategy's threshold/top-k are in perplexity units and apply after the exchange.
        known = answered(cosines, self_index).to(torch.float64)
        return known / known.sum()

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
