"""The attack interface, its registry, and the result every attack returns.

An attack is one class in one module: it subclasses :class:`Attack`, names the threat models it
measures (``threat_models = ("TM-01", ...)``, see ``threat_models/``), and registers itself with
:func:`register_attack`. A name is never silently replaced (``force=True`` to override), as with
Opacus's ``register_accountant`` and the toolkit's strategy registry.

Attacks take keyword parameters (validated in ``__init__``, :class:`ConfigError` on a bad one) and
are run on an :class:`~secure_pcft.audit.target.AuditTarget`: what the attacker may see (base model,
the shared adapter or update) and what the auditor knows (true members, canaries, inclusion coins).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt

from secure_pcft.audit.metrics import membership_metrics, roc_points
from secure_pcft.errors import AuditError, ConfigError
from secure_pcft.registry import claim
from secure_pcft.validation import require_int

if TYPE_CHECKING:
    from secure_pcft.audit.target import AuditTarget


@dataclass(frozen=True)
class AttackResult:
    """What one attack measured on one target.

    Attributes:
        name: the registered attack name.
        threat_models: TM ids whose adversary this attack plays.
        member_scores: scores of the true positives (members, inserted canaries, used tokens);
            higher = "member".
        nonmember_scores: scores of the true negatives.
        metrics: named figures (``roc_auc``, ``tpr_at_1pct_fpr``, ``exposure_bits``,
            ``token_recall``, ``epsilon_lb``, ...); NaN where undefined.
        details: JSON-serialisable extras (parameters, ROC points, per-canary figures).
    """

    name: str
    threat_models: tuple[str, ...]
    member_scores: tuple[float, ...]
    nonmember_scores: tuple[float, ...]
    metrics: Mapping[str, float]
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self, include_scores: bool = False) -> dict[str, Any]:
        """JSON-ready dict; non-finite metrics become strings ("inf", "nan")."""
        out: dict[str, Any] = {
            "name": self.name,
            "threat_models": list(self.threat_models),
            "metrics": {k: _json_float(v) for k, v in self.metrics.items()},
            "details": dict(self.details),
        }
        if include_scores:
            out["member_scores"] = list(self.member_scores)
            out["nonmember_scores"] = list(self.nonmember_scores)
        return out


def _json_float(x: float) -> float | str:
    return float(x) if math.isfinite(x) else str(x)


def membership_result(
    name: str,
    threat_models: tuple[str, ...],
    member_scores: npt.ArrayLike,
    nonmember_scores: npt.ArrayLike,
    *,
    extra_metrics: Mapping[str, float] | None = None,
    details: Mapping[str, Any] | None = None,
) -> AttackResult:
    """An :class:`AttackResult` with the standard MIA metrics and ROC points for plots."""
    pos = np.asarray(member_scores, dtype=np.float64).reshape(-1)
    neg = np.asarray(nonmember_scores, dtype=np.float64).reshape(-1)
    metrics = membership_metrics(pos, neg)
    metrics.update(extra_metrics or {})
    return AttackResult(
        name=name,
        threat_models=threat_models,
        member_scores=tuple(float(x) for x in pos),
        nonmember_scores=tuple(float(x) for x in neg),
        metrics=metrics,
        details={"roc": roc_points(pos, neg, max_points=100), **(details or {})},
    )


class Attack(ABC):
    """One attack. Subclasses set ``name`` and ``threat_models`` and implement :meth:`run`.

    Randomness (shadow data halves, candidate sampling) comes only from the ``rng`` passed in.
    """

    name: ClassVar[str]
    threat_models: ClassVar[tuple[str, ...]]

    @abstractmethod
    def run(self, target: AuditTarget, rng: np.random.Generator) -> AttackResult:
        """Attack ``target`` and measure.

        Raises:
            AuditError: the target lacks what this attack needs (e.g. canaries, an update).
        """

    def params(self) -> dict[str, Any]:
        """The attack's parameters (for result files)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


_ATTACKS: dict[str, type[Attack]] = {}


def register_attack(cls: type[Attack], *, force: bool = False) -> type[Attack]:
    """Register ``cls`` under ``cls.name``; usable as a class decorator.

    Raises:
        AuditError: no threat models.
        RegistryError: no valid name, or the name is taken and ``force`` is false.
    """
    name = getattr(cls, "name", "")
    if not getattr(cls, "threat_models", ()):
        raise AuditError(f"{cls.__name__}: an attack needs a name and its threat-model ids")
    return claim(_ATTACKS, "attack", name, cls, force)


def attack_names() -> tuple[str, ...]:
    """Names of the registered attacks, sorted."""
    _load_builtin()
    return tuple(sorted(_ATTACKS))


def make_attack(name: str, **params: Any) -> Attack:
    """Instantiate the attack registered as ``name`` with keyword ``params``.

    Raises:
        ConfigError: unknown attack name or an unknown/invalid parameter.
    """
    _load_builtin()
    cls = _ATTACKS.get(name)
    if cls is None:
        raise ConfigError(f"[attack] name: unknown attack {name!r}; registered: {attack_names()}")
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"[attack] {name}: {exc}") from exc


def _load_builtin() -> None:
    # Importing the modules registers the built-in attacks (one file each).
    from secure_pcft.audit import (  # noqa: F401
        canary_exposure,
        mia_lira,
        mia_loss,
        mia_reference,
        mia_rmia,
        mia_signature,
        mia_signature_twin,
        one_run,
        reconstruction,
        whitebox,
    )


def require_positive_int(value: object, name: str, what: str) -> int:
    """Validate an integer attack parameter (``ConfigError`` naming it and its unit)."""
    return require_int(value, "attack", name, 1, what)
