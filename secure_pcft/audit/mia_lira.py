"""``lira-offline``: the likelihood-ratio attack with OUT shadows only (Carlini et al. 2022).

Threat: TM-01 / TM-05 (a curious or colluding peer of the same domain holds population data and
the consortium's training recipe), TM-03 / TM-04 with security ``off``, TM-06 (stolen keys). For
each candidate block
x, the attacker fits a Gaussian N(μ_x, σ_x²) to x's loss under K shadow adapters that never saw x
and asks how unusually low the target's loss on x is: score = (μ_x − loss_target(x)) / σ_x
(the one-sided offline test statistic; LiRA's logit-confidence scaling is replaced by the block's
mean NLL, which is already on an unbounded scale). With few shadows a per-record σ_x is noisy, so
by default one σ is pooled over all candidates (LiRA's "global variance").
"""

from __future__ import annotations

import numpy as np

from secure_pcft.audit.attack import (
    Attack,
    AttackResult,
    membership_result,
    register_attack,
    require_positive_int,
)
from secure_pcft.audit.scoring import block_losses
from secure_pcft.audit.shadows import shadow_adapters, shadow_losses
from secure_pcft.audit.target import AuditTarget

_SIGMA_FLOOR = 1e-6


@register_attack
class LiraOffline(Attack):
    """Offline LiRA on block losses. Measures TM-01, TM-03, TM-04, TM-05, TM-06.

    Args:
        shadows: OUT shadow adapters (each a real training run on half the population data).
        global_variance: pool σ over all candidates (recommended below ~16 shadows).
    """

    name = "lira-offline"
    threat_models = ("TM-01", "TM-03", "TM-04", "TM-05", "TM-06")
    candidate_scores = True  # one score per candidate block (averaged per unit by the runner)

    def __init__(self, shadows: int = 4, global_variance: bool = True) -> None:
        self.shadows = require_positive_int(shadows, "shadows", "number of shadow adapters")
        if self.shadows < 2 and not global_variance:
            global_variance = True  # one shadow has no per-record spread
        self.global_variance = bool(global_variance)

    def _scores(self, target: AuditTarget, shadow: np.ndarray, own: np.ndarray) -> np.ndarray:
        mu = shadow.mean(axis=0)
        if self.global_variance:
            sigma = np.full_like(mu, max(float((shadow - mu).std()), _SIGMA_FLOOR))
        else:
            sigma = np.maximum(shadow.std(axis=0, ddof=1), _SIGMA_FLOOR)
        return (mu - own) / sigma

    def run(self, target: AuditTarget, rng: np.random.Generator) -> AttackResult:
        model = target.require_model()
        shadows = shadow_adapters(target, self.shadows)
        scores = []
        for blocks in (target.members, target.nonmembers):
            scores.append(
                self._scores(target, shadow_losses(shadows, blocks), block_losses(model, blocks))
            )
        return membership_result(
            self.name, self.threat_models, scores[0], scores[1], details=self.params()
        )
