"""Hard ε budgets: check before a release, record durably before a release, fail closed.

Mitigates TM-01 / TM-05 (curious or colluding recipients): whatever they pool, what they learn
about one record of this peer is bounded by the budget.

The guard never keeps ε as state: every check recomputes ε from the ledger's events plus the
pending ones. A refused release records nothing; an accepted one is on disk (fsync'd) before
:meth:`BudgetGuard.record_release` returns, and only then may the caller send anything.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Protocol

from secure_pcft.config import EPSILON_CEILING, PrivacyConfig
from secure_pcft.errors import BudgetExhaustedError, BudgetInfeasibleError, LedgerError
from secure_pcft.privacy.accounting import epsilon_spent
from secure_pcft.privacy.events import DpEvent
from secure_pcft.privacy.ledger import PrivacyLedger

log = logging.getLogger(__name__)


def budget_epsilon(cfg: PrivacyConfig, planned_epsilon: float) -> float:
    """The hard ε budget per peer per run: ``budget_epsilon``, else ``target_epsilon``, else (σ
    given) the ε of the run's whole plan, ``planned_epsilon``: a run never spends more than it
    planned, and a budget always exists.

    Raises:
        BudgetInfeasibleError: no budget is configured and the plan's ε is not finite or is above
            :data:`~secure_pcft.config.EPSILON_CEILING` (σ too small to protect anything).
    """
    if cfg.budget_epsilon is not None:
        return cfg.budget_epsilon
    if cfg.target_epsilon is not None:
        return cfg.target_epsilon
    if not math.isfinite(planned_epsilon) or planned_epsilon > EPSILON_CEILING:
        raise BudgetInfeasibleError(
            f"[privacy] noise_multiplier: σ = {cfg.noise_multiplier:g} plans ε = "
            f"{planned_epsilon:.4g} per peer per run, above the ceiling {EPSILON_CEILING:g} "
            "(no guarantee at all): raise σ, train fewer steps, or set target_epsilon"
        )
    return planned_epsilon


class AccountedTrainer(Protocol):
    """What the guard needs from a DP trainer (see :class:`~secure_pcft.privacy.DpTrainer`)."""

    def pending_event(
        self, *, round: int, released: str = ..., recipients: Sequence[str] = ...
    ) -> DpEvent: ...

    def mark_released(self, event: DpEvent) -> None: ...


class BudgetGuard:
    """The peer's gate in front of every release.

    Args:
        ledger: the peer's open ledger (the guard appends to it).
        budget_epsilon: hard ε budget per peer per run; None = record only, never refuse (only
            for ledgers written before every run had a budget; runs always set one).
        delta: δ of the peer; must equal the ledger's.
        accountant: ``rdp``, ``prv`` or ``gdp``; must equal the ledger's.
        prior: events of earlier runs on the same data (privacy/budget_store.py): they count
            against this budget too.

    Raises:
        LedgerError: the arguments disagree with the ledger's genesis (δ, budget and accountant
            are fixed for the life of a ledger, so a restart cannot quietly loosen them).
    """

    def __init__(
        self,
        ledger: PrivacyLedger,
        budget_epsilon: float | None,
        delta: float,
        accountant: str,
        prior: Sequence[DpEvent] = (),
    ) -> None:
        g = ledger.genesis
        if (g.budget_epsilon, g.delta, g.accountant) != (budget_epsilon, delta, accountant):
            raise LedgerError(
                f"{ledger.path.name}: ledger has budget ε={g.budget_epsilon}, δ={g.delta:g}, "
                f"accountant={g.accountant}; the guard was given ε={budget_epsilon}, "
                f"δ={delta:g}, accountant={accountant}"
            )
        self.ledger = ledger
        self.budget_epsilon = budget_epsilon
        self.delta = delta
        self.accountant = accountant
        self.prior = tuple(prior)

    @property
    def spent(self) -> float:
        """ε spent so far on this data (earlier runs' events and this ledger's), recomputed."""
        return epsilon_spent([*self.prior, *self.ledger.events], self.delta, self.accountant)

    @property
    def remaining(self) -> float:
        """Budget minus ε spent (∞ without a budget)."""
        return math.inf if self.budget_epsilon is None else self.budget_epsilon - self.spent

    def check(self, pending: Sequence[DpEvent]) -> float:
        """ε after the ``pending`` releases, if it fits the budget. Records nothing.

        Raises:
            BudgetExhaustedError: the releases would exceed the budget.
            PrivacyError: the accountant failed (treated as a refusal).
        """
        eps = epsilon_spent(
            [*self.prior, *self.ledger.events, *pending], self.delta, self.accountant
        )
        if self.budget_epsilon is not None and eps > self.budget_epsilon:
            what = ", ".join(sorted({e.released for e in pending})) or "nothing"
            raise BudgetExhaustedError(
                f"releasing {what} would bring ε to {eps:.4g} > budget {self.budget_epsilon:g} "
                f"(δ={self.delta:.3g}, {self.accountant}); nothing was released or recorded"
            )
        return eps

    def record_release(self, pending: Sequence[DpEvent]) -> float:
        """Check, then durably append ``pending``; returns ε after. Release only after it returns.

        Raises:
            BudgetExhaustedError: over budget; nothing recorded.
            LedgerError: the append failed; treat as "do not release".
        """
        eps = self.check(pending)
        self.ledger.append(pending)
        log.info("ledger %s: ε now %.4g (δ=%.3g)", self.ledger.path.name, eps, self.delta)
        return eps

    def record_training_release(
        self,
        trainer: AccountedTrainer,
        *,
        round: int,
        released: str = "adapter",
        recipients: Sequence[str] = (),
    ) -> float:
        """Record the DP-SGD steps since the trainer's last release, then mark them released.

        Call right before sending anything derived from the trainer's current model (adapter,
        prediction signatures, similarity answers).

        Raises:
            BudgetExhaustedError, LedgerError: as :meth:`record_release`; the trainer is unchanged.
        """
        event = trainer.pending_event(round=round, released=released, recipients=recipients)
        eps = self.record_release([event])
        trainer.mark_released(event)
        return eps

    def preflight(self, first_release: Sequence[DpEvent]) -> float:
        """ε of ``first_release`` alone; refuses a configuration that can never release anything.

        Raises:
            BudgetInfeasibleError: the first release alone exceeds the budget.
        """
        eps = epsilon_spent([*self.prior, *first_release], self.delta, self.accountant)
        if self.budget_epsilon is not None and eps > self.budget_epsilon:
            if self.prior:
                raise BudgetExhaustedError(
                    f"{self.ledger.path.name}: earlier runs on this data spent ε = "
                    f"{epsilon_spent(self.prior, self.delta, self.accountant):.4g}; with this run's "
                    f"first release ε = {eps:.4g} > budget {self.budget_epsilon:g}. The data's "
                    "budget is spent; a fresh budget only with --new-budget REASON, which is "
                    "recorded and shown on the compliance report"
                )
            raise BudgetInfeasibleError(
                f"[privacy] budget_epsilon: the first release alone costs ε={eps:.4g} > "
                f"{self.budget_epsilon:g} per peer per run; raise the budget, σ or lower the steps"
            )
        return eps
