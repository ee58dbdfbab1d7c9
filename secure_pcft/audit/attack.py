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

    ``candidate_scores``: the attack's member / non-member scores are one per block of
    ``target.members`` / ``target.nonmembers``, in order. On a target whose privacy unit is a
    document or a subject the campaign runner then averages them per unit (:func:`in_unit`), so
    the attack measures whole units — what the target's ε protects. ``units``: the privacy units
    the attack can measure in (a candidate-scoring attack: every unit; others only the block,
    unless they say otherwise).
    """

    name: ClassVar[str]
    threat_models: ClassVar[tuple[str, ...]]
    candidate_scores: ClassVar[bool] = False
    units: ClassVar[tuple[str, ...]] = ("block",)

    @classmethod
    def measures_unit(cls, unit: str) -> bool:
        return cls.candidate_scores or unit in cls.units

    @abstractmethod
    def run(self, target: AuditTarget, rng: np.random.Generator) -> AttackResult:
        """Attack ``target`` and measure.

        Raises:
            AuditError: the target lacks what this attack needs (e.g. canaries, an update).
        """

    def params(self) -> dict[str, Any]:
        """The attack's parameters (for result files)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


def in_unit(result: AttackResult, target: AuditTarget) -> AttackResult:
    """A candidate-scoring attack's result on a document / subject target, with each unit's
    score the mean of its blocks' scores (metrics recomputed over units); unchanged otherwise.

    Raises:
        AuditError: the scores do not line up with the target's candidate blocks.
    """
    if target.unit == "block" or target.member_units is None or target.nonmember_units is None:
        return result
    pos = _unit_means(result.member_scores, target.member_units, "member")
    neg = _unit_means(result.nonmember_scores, target.nonmember_units, "non-member")
    details = {k: v for k, v in result.details.items() if k != "roc"}
    details["unit"] = {
        "name": target.unit, "score": "mean of the unit's block scores",
        "member_blocks": len(result.member_scores), "nonmember_blocks": len(result.nonmember_scores),
    }  # fmt: skip
    extra = {k: v for k, v in result.metrics.items() if k not in membership_metrics(pos, neg)}
    return membership_result(
        result.name, result.threat_models, pos, neg, extra_metrics=extra, details=details
    )


def _unit_means(scores: tuple[float, ...], units: Any, what: str) -> npt.NDArray[np.float64]:
    owner = np.asarray(units, dtype=np.int64)
    values = np.asarray(scores, dtype=np.float64)
    if values.shape != owner.shape:
        raise AuditError(f"{len(values)} {what} scores for {len(owner)} candidate blocks")
    count = int(owner.max()) + 1 if owner.size else 0
    sums = np.bincount(owner, weights=values, minlength=count)
    return sums / np.bincount(owner, minlength=count)


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
