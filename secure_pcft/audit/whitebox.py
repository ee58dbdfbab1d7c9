"""``whitebox-dirac``: a white-box audit of DP-SGD with Dirac gradient canaries — TM-07, TM-01.

The one-run audit of :mod:`secure_pcft.audit.one_run` inserts example canaries and scores them
through the model: 64 of them can certify at most ε ≈ 2, so "ε_lb ≤ accountant ε" could not fail
for a run at ε = 8 whatever the mechanism really did. This audit has the power to fail.

Design (Steinke, Nasr & Jagielski 2023, white-box gradient canaries; Nasr et al. 2023):

* ``m`` canaries, each a *coordinate* k of the trainable LoRA parameters (distinct, drawn from the
  audit seed, public), each included by an independent fair coin (the auditor's secret).
* An included canary is one more training example of the DP-SGD run: in every step it is sampled
  with the run's Poisson rate q, and its clipped gradient is ``C·e_k`` — a Dirac gradient of norm
  exactly C, the worst case clipping allows. It is added to the summed clipped gradients before the
  noise (:class:`~secure_pcft.privacy.dp_trainer.SourcedDPOptimizer`), so the accountant's (ε, δ)
  for (σ, q, T) covers each canary as it covers a real block.
* The run uses plain SGD on the noisy gradient (the optimiser is post-processing; SGD keeps a
  canary's effect additive) on the target's own training blocks and LoRA settings.
* The attacker sees the released adapter and the public initial one (shared-init A and B = 0 are
  public); its score for canary k is ``−(θ_T − θ_0)_k``. Guesses: "in" for the top ``k_pos``,
  "out" for the bottom ``k_neg``, over a grid with a Bonferroni split; the bound is the one of
  :mod:`secure_pcft.audit.epsilon_bounds` at the run's δ.
* **Ceiling**: the bound if every guess of the largest grid point were right. A check "ε_lb ≤
  reported ε" means something only where the ceiling exceeds the reported ε; it is printed next to
  every bound.
* ``broken`` plays a faulty mechanism that still *reports* the ε of the correct one:
  ``noise/4`` (σ/4 used, σ reported) or ``no-clip`` (canary gradients of norm 10·C, as if clipping
  were off). The audit must flag both (ε_lb > reported ε) and never the correct one.

δ: the bound's δ term grows with 2·m·δ, so the audited run needs a small δ (the attack's
``delta``, default 1e-9; σ is calibrated for the target ε at that δ).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from secure_pcft.audit.attack import Attack, AttackResult, membership_result, register_attack
from secure_pcft.audit.epsilon_bounds import epsilon_lower_bound, one_run_epsilon
from secure_pcft.audit.target import AuditTarget
from secure_pcft.errors import AuditError, ConfigError
from secure_pcft.model.lora import attach_lora
from secure_pcft.privacy.accounting import epsilon_spent
from secure_pcft.privacy.dp_trainer import DpTrainer

BROKEN = ("none", "noise/4", "no-clip")
_NO_CLIP_FACTOR = 10.0


def _flat(params: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).double() for p in params])


@register_attack
class WhiteboxDirac(Attack):
    """White-box DP-SGD audit with Dirac gradient canaries. Measures TM-07 (a broken mechanism or
    accountant) and TM-01 (what the released adapter shows a recipient); see the module docstring.

    Args:
        canaries: m, at most the number of trainable coordinates.
        guesses: (k_pos, k_neg) grid; default ``[(m/40, m/40), (m/8, m/8), (m/3, m/3)]``.
        target_epsilon: ε of the audited run (default: the target recipe's).
        delta: δ of the audited run.
        broken: ``none``, ``noise/4`` or ``no-clip``.
        confidence: of the bound.
    """

    name = "whitebox-dirac"
    threat_models = ("TM-07", "TM-01")

    def __init__(
        self,
        canaries: int = 1000,
        guesses: Sequence[Sequence[int]] = (),
        target_epsilon: float | None = None,
        delta: float = 1e-9,
        broken: str = "none",
        confidence: float = 0.95,
    ) -> None:
        if type(canaries) is not int or canaries < 8:
            raise ConfigError("[attack] whitebox-dirac canaries: an integer >= 8")
        if broken not in BROKEN:
            raise ConfigError(f"[attack] whitebox-dirac broken: one of {BROKEN}, got {broken!r}")
        if not 0.0 < delta < 1e-3:
            raise ConfigError("[attack] whitebox-dirac delta: in (0, 1e-3)")
        if target_epsilon is not None and not target_epsilon > 0:
            raise ConfigError("[attack] whitebox-dirac target_epsilon: > 0")
        self.canaries = canaries
        self.guesses = tuple((int(a), int(b)) for a, b in guesses) or (
            (canaries // 40, canaries // 40),
            (canaries // 8, canaries // 8),
            (canaries // 3, canaries // 3),
        )
        self.target_epsilon = target_epsilon
        self.delta = delta
        self.broken = broken
        self.confidence = confidence

    def run(self, target: AuditTarget, rng: np.random.Generator) -> AttackResult:
        recipe = target.recipe
        if not recipe.privacy.enabled:
            raise AuditError("whitebox-dirac audits DP-SGD: the target recipe has DP off")
        eps = self.target_epsilon or recipe.privacy.target_epsilon
        if eps is None:
            raise AuditError("whitebox-dirac: give target_epsilon (the recipe fixes σ instead)")
        privacy = replace(recipe.privacy, target_epsilon=eps, noise_multiplier=None,
                          delta=self.delta, secure_rng=True)  # fmt: skip
        seed = int(rng.integers(0, 2**31))
        model = attach_lora(target.base.model, recipe.lora, peer_seed=seed)
        trainer = DpTrainer(
            model, target.members, recipe.train, privacy, torch.Generator().manual_seed(seed),
            optimizer="sgd",
        )  # fmt: skip
        try:
            scores, included = self._train_with_canaries(trainer, rng)
            claimed = trainer.pending_event(round=0)
            reported = epsilon_spent([claimed], trainer.delta, privacy.accountant)
        finally:
            trainer.close()
        outcome = one_run_epsilon(
            scores, included, trainer.delta, guess_grid=self.guesses, confidence=self.confidence
        )
        level = 1.0 - (1.0 - self.confidence) / len(self.guesses)
        ceiling = max(
            epsilon_lower_bound(self.canaries, a + b, a + b, trainer.delta, confidence=level)
            for a, b in self.guesses
        )
        metrics = {
            "epsilon_lb": outcome.epsilon_lb,
            "epsilon_lb_ceiling": ceiling,
            "epsilon_reported": reported,
            "flagged": float(outcome.epsilon_lb > reported),
            "sound": float(outcome.epsilon_lb <= reported),
            "power": float(ceiling > reported),
            "guesses": float(outcome.guesses),
            "correct": float(outcome.correct),
            "canaries": float(self.canaries),
            "noise_multiplier_reported": trainer.noise_multiplier,
        }
        details: dict[str, Any] = {
            "broken": self.broken,
            "delta": trainer.delta,
            "sample_rate": trainer.sample_rate,
            "steps": trainer.steps_done,
            "k_pos": outcome.k_pos,
            "k_neg": outcome.k_neg,
        }
        return membership_result(
            self.name, self.threat_models, scores[included], scores[~included],
            extra_metrics=metrics, details=details,
        )  # fmt: skip

    def _train_with_canaries(
        self, trainer: DpTrainer, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        params = trainer.params
        sizes = [p.numel() for p in params]
        total = sum(sizes)
        if self.canaries > total:
            raise AuditError(
                f"whitebox-dirac: {self.canaries} canaries but only {total} trainable coordinates"
            )
        coords = rng.choice(total, size=self.canaries, replace=False)
        included = rng.random(self.canaries) < 0.5
        offsets = np.cumsum([0, *sizes])
        owner = np.searchsorted(offsets, coords, side="right") - 1  # parameter of each canary
        magnitude = trainer.max_grad_norm * (_NO_CLIP_FACTOR if self.broken == "no-clip" else 1.0)
        if self.broken == "noise/4":
            trainer.optimizer.noise_multiplier = trainer.noise_multiplier / 4.0
        step_rng = np.random.default_rng(rng.integers(0, 2**63))
        q = trainer.sample_rate

        def add_canaries(summed: list[torch.Tensor]) -> None:
            sampled = included & (step_rng.random(self.canaries) < q)  # Poisson, like a block
            for j in np.unique(owner[sampled]):
                local = torch.as_tensor(coords[sampled & (owner == j)] - offsets[j])
                flat = summed[j].view(-1)
                flat.index_add_(0, local, torch.full((local.numel(),), magnitude, dtype=flat.dtype))

        theta0 = _flat(params)
        trainer.optimizer.audit_gradient = add_canaries
        trainer.train(trainer.cfg.total_steps)
        trainer.optimizer.audit_gradient = None
        delta_theta = (_flat(params) - theta0).numpy()
        scores = -delta_theta[coords]  # SGD moves against the canary's positive gradient
        if not np.isfinite(scores).all():
            raise AuditError("whitebox-dirac: the run produced non-finite parameters")
        return scores, included
