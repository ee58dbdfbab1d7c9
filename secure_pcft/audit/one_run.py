"""``one-run-epsilon``: an empirical ε lower bound from one run — TM-01, TM-02, TM-05, TM-07.

The target's training data holds ``m`` canary blocks, each inserted with an independent fair coin
(``[target.canaries] inclusion = 0.5, copies = 1``: one block is one DP unit, so the run's (ε, δ)
from the accountant applies to each canary). The attacker — anyone who sees the adapter — scores
every canary; the auditor guesses "in" for the top ``k_pos`` and "out" for the bottom ``k_neg``
and turns the number of correct guesses into ε_lb at 95% confidence with the bound of Steinke,
Nasr & Jagielski (2023) (see :mod:`secure_pcft.audit.epsilon_bounds` for the bound and its
soundness conditions). A sound bound must stay at or below the accountant's ε in every run; the
result reports both and ``sound`` = 1.0 when ε_lb <= ε.

Caveat (documented, not accounted): the DP trainer sets its sampling rate q = batch / N from the
realised N, which varies with the coins by O(√m) blocks; the accountant's analysis assumes q
independent of the data. The effect on ε is O(1/N) relative.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from secure_pcft.audit.attack import Attack, AttackResult, membership_result, register_attack
from secure_pcft.audit.epsilon_bounds import one_run_epsilon
from secure_pcft.audit.scoring import continuation_nll
from secure_pcft.audit.target import AuditTarget
from secure_pcft.errors import AuditError, ConfigError

DEFAULT_DELTA = 1e-5
"""δ of the null hypothesis when the target trained without DP (its ε is then ∞ anyway)."""


@register_attack
class OneRunEpsilon(Attack):
    """ε lower bound from canary guesses. Measures TM-01, TM-02, TM-05, TM-07 (accounting bugs).

    Args:
        guesses: (k_pos, k_neg) pairs to try; empty = one pair (m // 4, m // 4). Several pairs
            split the 5% error evenly (Bonferroni), so the best stays a valid bound.
        confidence: confidence of the bound.
        calibrated: score = NLL_base(secret) − NLL_target(secret) (public base as reference)
            instead of −NLL_target(secret).
    """

    name = "one-run-epsilon"
    threat_models = ("TM-01", "TM-02", "TM-05", "TM-07")

    def __init__(
        self,
        guesses: Sequence[Sequence[int]] = (),
        confidence: float = 0.95,
        calibrated: bool = False,
    ) -> None:
        pairs = []
        for g in guesses:
            if len(g) != 2:
                raise ConfigError("[attack] guesses: a list of [k_pos, k_neg] pairs")
            pairs.append((int(g[0]), int(g[1])))
        self.guesses = tuple(pairs)
        if not 0.5 <= confidence < 1.0:
            raise ConfigError("[attack] confidence: in [0.5, 1)")
        self.confidence = float(confidence)
        self.calibrated = bool(calibrated)

    def run(self, target: AuditTarget, rng: np.random.Generator) -> AttackResult:
        model = target.require_model()
        canaries = target.require_canaries()
        if canaries.spec.inclusion != 0.5 or canaries.spec.copies != 1:
            raise AuditError(
                "the one-run ε audit needs [target.canaries] inclusion = 0.5 and copies = 1 "
                "(one DP unit per canary, fair coins)"
            )
        scores = -continuation_nll(model, canaries.prefix_ids, canaries.secret_ids)
        if self.calibrated:
            scores += continuation_nll(target.base.model, canaries.prefix_ids, canaries.secret_ids)
        included = np.array(canaries.included)
        delta = target.delta if target.delta is not None else DEFAULT_DELTA
        outcome = one_run_epsilon(
            scores, included, delta, guess_grid=self.guesses or None, confidence=self.confidence
        )
        metrics = {
            "epsilon_lb": outcome.epsilon_lb,
            "epsilon": target.epsilon,
            "sound": float(outcome.epsilon_lb <= target.epsilon),
            "guesses": float(outcome.guesses),
            "correct_guesses": float(outcome.correct),
            "canaries": float(outcome.canaries),
            "canaries_included": float(outcome.included),
            "delta": delta,
        }
        details = {**self.params(), "k_pos": outcome.k_pos, "k_neg": outcome.k_neg,
                   "grid_size": outcome.grid_size}  # fmt: skip
        if included.all() or not included.any():
            return AttackResult(self.name, self.threat_models, (), (), metrics, details)
        return membership_result(
            self.name, self.threat_models, scores[included], scores[~included],
            extra_metrics=metrics, details=details,
        )  # fmt: skip
