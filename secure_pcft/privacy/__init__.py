"""Differential privacy for everything a peer releases (docs/design.md, "Privacy closure").

- :class:`DpTrainer`: DP-SGD (Opacus) on the LoRA parameters; drop-in for ``LocalTrainer``.
- :class:`PrivacyLedger`: the durable, hash-chained, append-only ledger of a peer's releases.
- :class:`BudgetGuard`: checks ε before a release and records it durably, failing closed.
- :func:`epsilon_spent`, :func:`calibrate_noise_multiplier`: Opacus accountants (rdp, prv, gdp).
- :func:`noisy_validation_scores`: the accounted mechanism of the ``validation`` strategy.
"""

from secure_pcft.privacy.accounting import (
    MAX_SANE_SIGMA,
    calibrate_noise_multiplier,
    epsilon_spent,
    history_from_events,
    register_accountant,
)
from secure_pcft.privacy.budget import AccountedTrainer, BudgetGuard, budget_epsilon
from secure_pcft.privacy.dp_trainer import DpTrainer, resolve_delta
from secure_pcft.privacy.events import MECHANISMS, DpEvent, Genesis, LedgerEntry, Mechanism
from secure_pcft.privacy.ledger import (
    LedgerContents,
    LedgerHead,
    PrivacyLedger,
    ledger_path,
    read_ledger,
)
from secure_pcft.privacy.losses import per_example_lm_loss
from secure_pcft.privacy.randomness import OsUrandomSource, RandomSource, SeededSource
from secure_pcft.privacy.validation_scores import (
    NoisyValidation,
    noisy_validation_scores,
    validation_losses,
)

__all__ = [
    "MAX_SANE_SIGMA",
    "MECHANISMS",
    "AccountedTrainer",
    "BudgetGuard",
    "DpEvent",
    "DpTrainer",
    "Genesis",
    "LedgerContents",
    "LedgerEntry",
    "LedgerHead",
    "Mechanism",
    "NoisyValidation",
    "OsUrandomSource",
    "PrivacyLedger",
    "RandomSource",
    "SeededSource",
    "budget_epsilon",
    "calibrate_noise_multiplier",
    "epsilon_spent",
    "history_from_events",
    "ledger_path",
    "noisy_validation_scores",
    "per_example_lm_loss",
    "read_ledger",
    "register_accountant",
    "resolve_delta",
    "validation_losses",
]
