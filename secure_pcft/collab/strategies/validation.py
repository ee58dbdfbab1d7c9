"""``validation``: W_ij = softmax_j(−perplexity of peer j's adapter on peer i's validation split).

The paper's rule uses temperature 1 on the perplexity scale. ``relative = true`` scores the mean
per-block loss gap to the own adapter instead, W_ij = softmax_j(−gap_ij / T) with T in nats and
gap_ii = 0 (no query): under DP its accounted mechanism has a 2c/n sensitivity instead of C/n
(privacy/validation_scores.py), which is what makes the scores informative at ε ≤ 8. Peer i's validation split is private,
so the weights it derives are a function of private data (see docs/design.md, privacy closure).

``calibrated = true`` picks the temperature per peer and round from its own scores: they are
standardised over the adapters it scored (z-scores, self included) and multiplied by the same gain
as calibrated ``predictions`` (4), so the rule does not depend on the perplexity scale of the base
(the paper's T = 1 is a hard argmin at perplexities in the hundreds, and a fixed T that suits one
base is too flat or too sharp for another). It is post-processing of the (accounted, under DP)
scores: no privacy cost. ``threshold`` is then in those standardised units.

Secure mode: discovery and selection use the ``weights`` vector (encrypted weight cosines); the
trust row itself is this strategy's, computed after the exchange on the adapters received.

At scale: every scored adapter costs a forward pass over the peer's validation batches
(``[train] eval_batches``), N per peer and round in plain mode. ``candidates = k`` scores only the
own adapter and the k-1 others closest by row-wise weight cosine (the plain-mode counterpart of the
encrypted pre-selection), so a round costs N·k passes instead of N².
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from secure_pcft.collab.strategies.predictions import CALIBRATED_GAIN
from secure_pcft.collab.strategies.weights import rowwise_cosine, weights_vector
from secure_pcft.collab.strategy import (
    AdapterState,
    Discovery,
    ScoreSoftmaxStrategy,
    StrategyOptions,
    TrustContext,
    UnitVector,
    answered,
    option,
    register_strategy,
)
from secure_pcft.crypto.projection import ProjectionSpec
from secure_pcft.errors import StrategyError
from secure_pcft.validation import require, require_range

if TYPE_CHECKING:
    from secure_pcft.collab.peer import Peer


@dataclass(frozen=True)
class ValidationOptions(StrategyOptions):
    """``[strategy]`` keys of ``validation``.

    Attributes:
        calibrated: standardise the peer's scores of the round (z-scores over the adapters it
            scored) before the softmax, so the temperature is per peer and does not depend on the
            base's perplexity scale.
        relative: score each received adapter by its mean per-block loss *gap* to the peer's own
            adapter on the validation split (nats; own = 0, not scored) instead of by perplexity;
            under DP the accounted gaps are clipped to ±``[privacy] validation_gap_clip``, a far
            smaller sensitivity than whole losses. The temperature is then in nats.
        candidates: score at most this many adapters per round, self included — the own adapter
            and the ``candidates - 1`` others closest to it by row-wise LoRA weight cosine (the
            similarity encrypted discovery computes in secure mode, no forward pass); the rest get
            weight 0. 0 = score every adapter held. Cuts the O(N²) validation forward passes of a
            round to O(N·candidates), and under DP the accounted scores the privacy plan reserves.
    """

    calibrated: bool = option(False, label="calibrated")
    relative: bool = option(False, label="relative")
    candidates: int = option(0, label="cand", late=True)

    def __post_init__(self) -> None:
        require_range(self.candidates, "strategy", "candidates", 0, 4096, "adapters (0 = all)")
        require(
            self.candidates != 1,
            "strategy",
            "candidates",
            "1 would score only the own adapter (use name = 'local'); 0 = all, or >= 2",
        )


@register_strategy
class ValidationTrust(ScoreSoftmaxStrategy):
    name = "validation"
    discovery = Discovery.ADAPTERS
    encrypted = True
    rescore_after_exchange = True
    Options = ValidationOptions
    options: ValidationOptions

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
        scored = min(held, self.options.candidates) if self.options.candidates else held
        # relative: the own adapter's gap is 0 by definition, so it is not a query
        return scored - 1 if self.options.relative else scored

    def candidates(self, ctx: TrustContext) -> dict[int, AdapterState]:
        """The adapters to score: all held, or (``candidates = k``) the own one and the k-1
        others with the highest row-wise weight cosine to it (ties: lower index first)."""
        k = self.options.candidates
        if not k or len(ctx.adapters) <= k:
            return dict(ctx.adapters)
        own = ctx.adapters[ctx.self_index]
        others = sorted(
            (j for j in ctx.adapters if j != ctx.self_index),
            key=lambda j: (-rowwise_cosine(own, ctx.adapters[j]), j),
        )
        keep = [ctx.self_index, *others[: k - 1]]
        return {j: ctx.adapters[j] for j in keep}

    def scores(self, ctx: TrustContext) -> torch.Tensor:
        s = self.raw_scores(ctx)
        return standardised_scores(s) if self.options.calibrated else s

    def raw_scores(self, ctx: TrustContext) -> torch.Tensor:
        """−perplexity (or −loss gap) of every scored adapter, −inf for the others."""
        s = torch.full((ctx.num_peers,), float("-inf"), dtype=torch.float64)
        adapters = self.candidates(ctx)
        if self.options.relative:
            if ctx.validation_gap is None:
                raise StrategyError("relative validation needs the peer's validation gap scorer")
            s[ctx.self_index] = 0.0
            for j, state in adapters.items():
                if j != ctx.self_index:
                    s[j] = -ctx.validation_gap(state)
            return s
        if ctx.validation_perplexity is None:
            raise StrategyError("validation strategy needs the peer's validation scorer")
        for j, state in adapters.items():
            s[j] = -ctx.validation_perplexity(state)
        return s


def standardised_scores(s: torch.Tensor) -> torch.Tensor:
    """``CALIBRATED_GAIN`` · z-scores of the finite entries of ``s`` (the scored adapters, self
    included); −inf entries stay −inf; all equal (or a single one) → 0."""
    out = s.clone().to(torch.float64)
    finite = torch.isfinite(out)
    vals = out[finite]
    std = vals.std(unbiased=False) if vals.numel() > 1 else torch.tensor(0.0, dtype=out.dtype)
    out[finite] = CALIBRATED_GAIN * (vals - vals.mean()) / std if float(std) > 0 else 0.0
    return out
