"""Audit campaigns: declarative TOML files that say who is attacked, how it trains, which attacks
run, how often, and which figures must stay below (or above) which thresholds.

Layout of a campaign file (``audits/*.toml``; see ``audits/README.md``)::

    [campaign]               name, description, threat_models = ["TM-01", ...], trials, seed
    [campaign.summary]       summary key = "label.metric" | ["label.metric", ...] (max) | "target.epsilon"
    [target]                 peer, population_peers, max_candidates
    [target.model|lora|data|train|privacy]   ordinary run-config sections (validated as in a run)
    [target.canaries]        optional: canaries inserted into the target's data (CanarySpec)
    [target.update]          optional: observe one update instead of a trained adapter
    [target.collaboration]   optional: strategy = label; the target is the adapter its peer
                             released in the last round of a real collaboration
    [[attacks]]              name, label, params = {...}, max = {metric = v}, min = {metric = v}

Everything is parsed into frozen dataclasses and validated on load; any problem raises
:class:`ConfigError` naming the table and key. Attack names and parameters are checked by building
each attack once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from secure_pcft.audit.attack import make_attack
from secure_pcft.audit.canaries import CanarySpec
from secure_pcft.audit.collab_target import CollaborationSpec
from secure_pcft.audit.target import TargetSpec
from secure_pcft.audit.updates import UPDATE_OPTIMIZERS
from secure_pcft.config import config_from_dict, load_toml
from secure_pcft.errors import ConfigError
from secure_pcft.validation import is_int, require

_TM_ID = re.compile(r"^TM-\d{2}$")
_LABEL = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_RUN_SECTIONS = ("model", "lora", "data", "train", "privacy")


@dataclass(frozen=True)
class UpdateSpec:
    """Observe one update of the target instead of training a whole adapter (reconstruction).

    Attributes:
        optimizer: ``sgd``, ``adamw`` or ``dp-sgd`` (see :func:`~secure_pcft.audit.updates.capture_update`).
        steps: optimiser steps on the audited batch.
        lr: learning rate of those steps.
        warm_steps: warm-up steps on the peer's other blocks first (LoRA-B must be non-zero).
        batch_blocks: sequences in the audited batch (training blocks drawn with the trial's seed).
        tokens: tokens kept per sequence (0 = the whole block).
    """

    optimizer: str = "sgd"
    steps: int = 1
    lr: float = 0.1
    warm_steps: int = 20
    batch_blocks: int = 1
    tokens: int = 0

    def __post_init__(self) -> None:
        s = "target.update"
        require(self.optimizer in UPDATE_OPTIMIZERS, s, "optimizer", f"one of {UPDATE_OPTIMIZERS}")
        for name in ("steps", "warm_steps", "batch_blocks"):
            value = getattr(self, name)
            require(is_int(value) and value >= 1, s, name, "an integer >= 1")
        require(
            isinstance(self.tokens, int) and self.tokens >= 0 and self.tokens != 1,
            s,
            "tokens",
            "tokens per sequence, >= 2 (0 = whole block)",
        )
        require(self.lr > 0, s, "lr", "learning rate > 0")


@dataclass(frozen=True)
class AttackSpec:
    """One attack of a campaign and its pass/fail thresholds.

    Attributes:
        name: a registered attack.
        label: unique within the campaign (default: the name); results and summaries use it.
        params: keyword parameters of the attack.
        max: metric -> largest value that passes (e.g. ``roc_auc = 0.6``).
        min: metric -> smallest value that passes (e.g. ``sound = 1.0``).
    """

    name: str
    label: str
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    max: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    min: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not _LABEL.match(self.label):
            raise ConfigError(f"[[attacks]] label: {self.label!r}: lower-case [a-z0-9_.-], <= 64")
        for table in ("max", "min"):
            for metric, value in getattr(self, table).items():
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ConfigError(f"[[attacks]] {self.label}.{table}.{metric}: a number")
        make_attack(self.name, **dict(self.params))  # validates name and parameters


@dataclass(frozen=True)
class Campaign:
    """A whole audit campaign.

    Attributes:
        name: file-name-safe campaign name (results go to ``<output>/<name>.json``).
        description: one line for reports.
        threat_models: TM ids the campaign measures (``TM-01`` … see threat_models/).
        trials: independent targets (seeds ``seed``, ``seed + 1``, …); metrics are averaged.
        seed: first trial's seed.
        target: who is attacked and how it trains.
        update: observe an update instead of a trained adapter (None = train an adapter).
        collaboration: train the target in a real collaboration and attack the adapter it
            released in the last round (None = the target trains alone).
        attacks: the attacks, in order.
        summary: summary key -> metric references (``label.metric`` or ``target.epsilon``);
            several references give their maximum.
        source: the file it was loaded from (empty if built in code).
    """

    name: str
    target: TargetSpec
    attacks: tuple[AttackSpec, ...]
    description: str = ""
    threat_models: tuple[str, ...] = ()
    trials: int = 1
    seed: int = 0
    update: UpdateSpec | None = None
    collaboration: CollaborationSpec | None = None
    summary: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    source: str = ""

    def __post_init__(self) -> None:
        if not _LABEL.match(self.name):
            raise ConfigError(f"[campaign] name: {self.name!r}: lower-case [a-z0-9_.-], <= 64")
        bad = [t for t in self.threat_models if not _TM_ID.match(t)]
        if bad or not self.threat_models:
            raise ConfigError(f"[campaign] threat_models: ids like 'TM-01', got {bad or '[]'}")
        if not isinstance(self.trials, int) or not 1 <= self.trials <= 100:
            raise ConfigError("[campaign] trials: independent targets, an integer in [1, 100]")
        if not self.attacks:
            raise ConfigError("[[attacks]]: a campaign needs at least one attack")
        labels = [a.label for a in self.attacks]
        if len(set(labels)) != len(labels):
            raise ConfigError("[[attacks]] label: labels must be unique (set label = ...)")
        unit = self.target.run.privacy.unit
        for a in self.attacks:
            if not type(make_attack(a.name, **dict(a.params))).measures_unit(unit):
                raise ConfigError(
                    f"[[attacks]] {a.label}: {a.name!r} measures token blocks, but [target.privacy] "
                    f"unit = {unit!r}; in that unit use a candidate-scoring attack (loss, "
                    "reference, lira, rmia) or canary-exposure"
                )
        if unit != "block" and self.update is not None:
            raise ConfigError(
                f"[target.update] observes one update on token blocks; [target.privacy] unit = "
                f"{unit!r} is audited on trained adapters"
            )
        for key, refs in self.summary.items():
            for ref in refs:
                head = ref.split(".", 1)[0]
                if "." not in ref or (head != "target" and head not in labels):
                    raise ConfigError(
                        f"[campaign.summary] {key}: {ref!r} must be 'label.metric' of an attack "
                        "of this campaign or 'target.epsilon'"
                    )


def _table(raw: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{where}] must be a table")
    return dict(value)


def _known(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"[{where}] unknown key(s): {', '.join(unknown)}")


def _build(cls: type[Any], raw: Mapping[str, Any], where: str) -> Any:
    _known(raw, {f.name for f in fields(cls)}, where)
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    except TypeError as exc:
        raise ConfigError(f"[{where}] {exc}") from exc


def _target(
    raw: dict[str, Any],
) -> tuple[TargetSpec, UpdateSpec | None, CollaborationSpec | None]:
    _known(raw, {*_RUN_SECTIONS, "canaries", "update", "collaboration", "peer",
                 "population_peers", "max_candidates"}, "target")  # fmt: skip
    run = config_from_dict({k: raw[k] for k in _RUN_SECTIONS if k in raw})
    canaries = _build(CanarySpec, raw["canaries"], "target.canaries") if "canaries" in raw else None
    update = _build(UpdateSpec, raw["update"], "target.update") if "update" in raw else None
    collab = (
        _build(CollaborationSpec, raw["collaboration"], "target.collaboration")
        if "collaboration" in raw
        else None
    )
    if collab is not None and (update is not None or canaries is not None):
        raise ConfigError(
            "[target.collaboration] trains the target in a collaboration: no [target.update] or "
            "[target.canaries] with it"
        )
    spec = TargetSpec(
        run=run,
        peer=str(raw.get("peer", "")),
        population_peers=tuple(raw.get("population_peers", ())),
        canaries=canaries,
        max_candidates=int(raw.get("max_candidates", 0)),
    )
    return spec, update, collab


def _attack(raw: Any, index: int) -> AttackSpec:
    where = f"attacks[{index}]"
    if not isinstance(raw, dict) or "name" not in raw:
        raise ConfigError(f"[{where}] needs a name")
    _known(raw, {"name", "label", "params", "max", "min"}, where)
    name = str(raw["name"])
    return AttackSpec(
        name=name,
        label=str(raw.get("label", name)),
        params=MappingProxyType(_table(raw, "params", f"{where}.params")),
        max=MappingProxyType(_table(raw, "max", f"{where}.max")),
        min=MappingProxyType(_table(raw, "min", f"{where}.min")),
    )


def campaign_from_dict(raw: Mapping[str, Any], source: str = "") -> Campaign:
    """Build a validated :class:`Campaign` from a parsed TOML mapping.

    Raises:
        ConfigError: unknown table or key, wrong type, unknown attack, or a value out of range.
    """
    _known(raw, {"campaign", "target", "attacks"}, "campaign file")
    info = _table(raw, "campaign", "campaign")
    _known(info, {"name", "description", "threat_models", "trials", "seed", "summary"}, "campaign")
    attacks = raw.get("attacks", [])
    if not isinstance(attacks, list):
        raise ConfigError("[[attacks]] must be an array of tables")
    summary = {
        k: tuple(v) if isinstance(v, list) else (str(v),)
        for k, v in _table(info, "summary", "campaign.summary").items()
    }
    target, update, collab = _target(_table(raw, "target", "target"))
    return Campaign(
        name=str(info.get("name", "")),
        description=str(info.get("description", "")),
        threat_models=tuple(info.get("threat_models", ())),
        trials=info.get("trials", 1),
        seed=int(info.get("seed", 0)),
        target=target,
        update=update,
        collaboration=collab,
        attacks=tuple(_attack(a, i) for i, a in enumerate(attacks)),
        summary=MappingProxyType(summary),
        source=source,
    )


def load_campaign(path: str | Path) -> Campaign:
    """Load and validate a campaign TOML file.

    Raises:
        ConfigError: missing file, invalid TOML, or an invalid campaign.
    """
    raw = load_toml(path, "campaign file")
    return campaign_from_dict(raw, source=str(path))
