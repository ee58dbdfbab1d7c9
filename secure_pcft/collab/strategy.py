"""Trust strategies: each peer computes its own row of weights over the peers (self included).

A strategy is one small class behind :class:`TrustStrategy`, registered by name; a new strategy is
one new file and one :func:`register_strategy` call. The registry refuses silent overwrites.
Options live with their strategy (the peft pattern): the ``[strategy]`` keys every strategy shares
(name, temperature, top_k, threshold, accept) are :class:`~secure_pcft.config.StrategyConfig`'s;
a strategy's own keys are the fields of its ``Options`` dataclass (a :class:`StrategyOptions`),
typed, range-checked and refused when unknown (naming the closest key) as the strategy is built.
Each option also says how it shows in the strategy's *label* (``predictions-shift-calibrated-t10-
top3-accept``), the name of result folders and table rows; :func:`strategy_label` and
:func:`strategy_from_label` are exact inverses.

One object owns a strategy's whole rule, in both security modes:

* plain mode: :meth:`TrustStrategy.row` scores what the peer received (signatures, adapters);
* secure mode (``[security] mode = "full"``): peers never see each other's adapters or signatures
  before choosing whom to trust. A strategy with ``encrypted = True`` turns the peer's own state
  into a public-length unit vector (:meth:`~TrustStrategy.encrypted_vector`); the pairwise inner
  products are computed under CKKS (:mod:`secure_pcft.collab.encrypted_discovery`) and
  :meth:`~TrustStrategy.encrypted_row` turns the decrypted cosines into the trust row that selects
  whom to ask. ``rescore_after_exchange``: the final row is :meth:`row` on the adapters received
  (``validation``). A strategy that needs discovery but has no encrypted rule is refused in secure
  mode (fail closed: nothing is ever broadcast in clear with security on).

Threats mitigated (threat_models/): adapters and signatures reaching a curious peer (TM-01), the
network (TM-03) or the relay (TM-04) in clear during discovery.
"""

from __future__ import annotations

import json
import re
import sys
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt
import torch

from secure_pcft.collab.messages import MessageType
from secure_pcft.collab.ranking import rank_others
from secure_pcft.config import (
    SHARED_STRATEGY_KEYS,
    RunConfig,
    StrategyConfig,
    build_section,
    with_suggestions,
)
from secure_pcft.crypto.projection import ProjectionSpec
from secure_pcft.errors import ConfigError, StrategyError
from secure_pcft.registry import RegistryError, claim

if TYPE_CHECKING:
    from secure_pcft.collab.peer import Peer

AdapterState = dict[str, torch.Tensor]
UnitVector = npt.NDArray[np.float64]


class Discovery(StrEnum):
    """What a strategy needs from the other peers before it can score them."""

    NONE = "none"  # weights known without looking at others (local, fedavg, oracle)
    SIGNATURES = "signatures"  # prediction signatures on the public reference set
    ADAPTERS = "adapters"  # the other peers' adapters themselves


def option(
    default: Any, *, label: str = "", values: Mapping[str, str] | None = None, late: bool = False
) -> Any:
    """One field of a strategy's :class:`StrategyOptions` and how it shows in the label.

    Args:
        default: the value when the ``[strategy]`` table does not set the key.
        label: for a bool, the label part when true (``calibrated``); for a number, the prefix of
            the part written when it differs from the default (``cand`` → ``cand5``).
        values: for a string, the label part of each non-default value
            (``{"logprob-shift": "shift"}``).
        late: the part follows the shared selection parts (``t10-top3-thr0.5``) instead of
            preceding them (keeps the built-ins' labels as published).
    """
    return field(default=default, metadata={"label": label, "values": dict(values or {}),
                                            "late": late})  # fmt: skip


# The shared numeric keys a label writes when they differ from their defaults: (key, prefix,
# integer), in label order; ``accept`` is a flag part written last. A strategy's option may not
# spell a part that starts with one of these prefixes.
_SHARED_NUMBERS: tuple[tuple[str, str, bool], ...] = (
    ("temperature", "t", False),
    ("top_k", "top", True),
    ("threshold", "thr", False),
)
_SHARED_PARTS = (*(prefix for _, prefix, _ in _SHARED_NUMBERS), "accept")


@dataclass(frozen=True)
class StrategyOptions:
    """A strategy's own ``[strategy]`` keys: subclass it with one :func:`option` field per key,
    check ranges in ``__post_init__`` (``secure_pcft.validation.require*``, section ``strategy``),
    and name the subclass as the strategy's ``Options``. The base has no keys (``local``, ``fedavg``,
    ``oracle``)."""

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_config(cls, cfg: StrategyConfig) -> StrategyOptions:
        """The options of ``cfg`` for this strategy, typed and checked.

        Raises:
            ConfigError: a key this strategy does not have (the closest known key suggested), a
                value of the wrong type, or one out of range.
        """
        keys = cls.keys()
        unknown = sorted(set(cfg.options) - set(keys))
        if unknown:
            own = f"its options: {', '.join(keys)}" if keys else "it has no options of its own"
            raise ConfigError(
                f"[strategy] strategy {cfg.name!r} has no key(s) "
                f"{with_suggestions(unknown, (*keys, *SHARED_STRATEGY_KEYS))} ({own}; every "
                f"strategy has {', '.join(SHARED_STRATEGY_KEYS)})"
            )
        return build_section(cls, "strategy", cfg.options)

    def label_parts(self, *, late: bool) -> list[str]:
        """The label parts of the options that differ from their defaults, in field order."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("late", False) != late or value == f.default:
                continue
            if isinstance(value, bool):
                parts.append(f.metadata["label"])
            elif isinstance(value, str):
                parts.append(f.metadata["values"][value])
            else:
                parts.append(_label_number(f.metadata["label"], value))
        return parts

    @classmethod
    def parse_label_part(cls, part: str) -> tuple[str, Any] | None:
        """``(key, value)`` of the option that writes ``part``, or None."""
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            meta, hint = f.metadata, hints[f.name]
            if hint is bool:
                if part == meta.get("label"):
                    return f.name, True
                continue
            for value, text in meta.get("values", {}).items():
                if part == text:
                    return f.name, value
            prefix = meta.get("label", "")
            if not prefix or not part.startswith(prefix):
                continue
            value = _parse_label_number(part[len(prefix) :], integer=hint is int)
            if value is not None:
                return f.name, value
        return None

    @classmethod
    def check_declaration(cls, strategy: str) -> None:
        """Refuse an ``Options`` class whose keys or label parts clash with the shared ones, or
        whose fields were not declared with :func:`option`.

        Raises:
            RegistryError: the clash, named.
        """
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            if f.name in SHARED_STRATEGY_KEYS or f.name == "options":
                raise RegistryError(f"strategy {strategy!r}: option {f.name!r} is a shared key")
            if "label" not in f.metadata or f.default is MISSING:
                raise RegistryError(
                    f"strategy {strategy!r}: option {f.name!r} needs a default and a label "
                    "(declare it with collab.strategy.option)"
                )
            hint = hints[f.name]
            if hint not in (bool, int, float) and typing.get_origin(hint) is not typing.Literal:
                raise RegistryError(
                    f"strategy {strategy!r}: option {f.name!r} must be a bool, an int, a float "
                    "or a Literal of strings (a label names every value)"
                )
            if typing.get_origin(hint) is typing.Literal:
                unlabelled = [v for v in typing.get_args(hint)
                              if v != f.default and v not in f.metadata["values"]]  # fmt: skip
                if unlabelled:
                    raise RegistryError(
                        f"strategy {strategy!r}: option {f.name!r} has no label part for "
                        f"{unlabelled} (option(values=...))"
                    )
            texts = [f.metadata["label"], *f.metadata["values"].values()]
            clash = [t for t in texts if t and any(t.startswith(p) for p in _SHARED_PARTS)]
            if clash or not any(texts):
                raise RegistryError(
                    f"strategy {strategy!r}: option {f.name!r} needs a label part that does not "
                    f"start with a shared one ({', '.join(_SHARED_PARTS)}), got {texts}"
                )


@dataclass
class TrustContext:
    """What peer ``self_index`` knows when it computes its row.

    Attributes:
        self_index: position of this peer in ``peer_ids``.
        peer_ids: all peers of the run, in a fixed order.
        adapters: adapter states this peer holds, by peer index (its own included).
        signatures: prediction signatures by peer index (its own included).
        domain_mixes: known domain proportions of every peer (simulation knowledge; oracle only).
        validation_perplexity: scores an adapter state on this peer's private validation split.
        validation_gap: its mean per-block loss gap to this peer's own adapter there (nats).
    """

    self_index: int
    peer_ids: tuple[str, ...]
    adapters: Mapping[int, AdapterState] = field(default_factory=dict)
    signatures: Mapping[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    domain_mixes: tuple[Mapping[str, float], ...] = ()
    validation_perplexity: Callable[[AdapterState], float] | None = None
    validation_gap: Callable[[AdapterState], float] | None = None

    @property
    def num_peers(self) -> int:
        return len(self.peer_ids)


class TrustStrategy(ABC):
    """Computes one peer's row of trust weights (non-negative, summing to 1, length N).

    Attributes:
        name: the registry name (``[strategy] name``).
        discovery: what the strategy needs from the other peers before it can score them.
        encrypted: it has an encrypted-discovery rule (secure mode).
        rescore_after_exchange: in secure mode the final row is :meth:`row` on the adapters
            received; the row from the cosines only selects whom to ask.
    """

    name: ClassVar[str]
    discovery: ClassVar[Discovery] = Discovery.NONE
    encrypted: ClassVar[bool] = False
    rescore_after_exchange: ClassVar[bool] = False
    Options: ClassVar[type[StrategyOptions]] = StrategyOptions
    options: StrategyOptions

    def __init__(self, cfg: StrategyConfig) -> None:
        """Raises: ConfigError: ``cfg`` has a key this strategy does not have, or a bad value."""
        self.cfg = cfg
        self.options = self.Options.from_config(cfg)

    @property
    def label(self) -> str:
        """The name plus the options that differ from the defaults, e.g.
        ``predictions-calibrated`` or ``validation-t50-top3`` (names result folders and rows)."""
        c = self.cfg
        parts = [self.name, *self.options.label_parts(late=False)]
        defaults = {f.name: f.default for f in fields(StrategyConfig)}
        for key, prefix, _ in _SHARED_NUMBERS:
            if getattr(c, key) != defaults[key]:
                parts.append(_label_number(prefix, getattr(c, key)))
        parts.extend(self.options.label_parts(late=True))
        if c.accept:
            parts.append("accept")
        return "-".join(parts)

    def releases(self, *, secure: bool) -> frozenset[MessageType]:
        """The releases (``MessageType.release``) a round of this strategy may send; with DP on,
        the peer's ledger refuses any other (``PeerPrivacy.authorize``). Default: adapters, which
        the aggregate needs, plus what discovery sends — prediction signatures in plain mode,
        encrypted similarity answers in secure mode. Override to declare less (``local``) or
        more; a strategy that sends something new must say so here."""
        out = {MessageType.ADAPTER}
        if self.discovery is not Discovery.NONE and secure:
            out.add(MessageType.HE_ANSWER)
        elif self.discovery is Discovery.SIGNATURES:
            out.add(MessageType.SIGNATURE)
        return frozenset(out)

    def reference_batches(self) -> int:
        """Public reference batches a round draws for this strategy's signatures (0 = it
        compares none)."""
        return 0

    def signature(self, peer: Peer, reference: torch.Tensor) -> dict[str, torch.Tensor]:
        """``peer``'s prediction signature on the reference blocks (``Discovery.SIGNATURES``)."""
        raise StrategyError(f"strategy {self.name!r} compares no prediction signatures")

    @abstractmethod
    def row(self, ctx: TrustContext) -> torch.Tensor:
        """Return this peer's trust weights, shape (N,), float64, rows sum to 1."""

    def private_scores(self, held: int) -> int:
        """Accounted scores on the peer's *private* data per round when it holds ``held``
        adapters (its own included); each is a release the privacy plan reserves up front.
        Default 0: the strategy uses no private data beyond its DP adapter."""
        return 0

    def encrypted_vector(
        self, peer: Peer, reference: torch.Tensor, spec: ProjectionSpec
    ) -> UnitVector:
        """Secure mode: this peer's unit vector, shape (spec.dim,), from its own state only."""
        raise StrategyError(f"strategy {self.name!r} has no encrypted-discovery rule")

    def encrypted_row(self, cosines: torch.Tensor, self_index: int) -> torch.Tensor:
        """Secure mode: the trust row (N,) from decrypted cosines (N,); NaN = no answer (weight 0)."""
        raise StrategyError(f"strategy {self.name!r} has no encrypted-discovery rule")


class ScoreSoftmaxStrategy(TrustStrategy):
    """Strategies of the form W_i = softmax(score_i / temperature) over the selected peers.

    Selection options (all strategies of this family, ranked as :mod:`~secure_pcft.collab.ranking`
    says): ``top_k = k`` keeps self and the k - 1 best-scored other peers; ``threshold`` drops
    peers scoring below it (self is always kept).
    """

    @abstractmethod
    def scores(self, ctx: TrustContext) -> torch.Tensor:
        """Raw scores, shape (N,); higher means more trusted. -inf excludes a peer."""

    def row(self, ctx: TrustContext) -> torch.Tensor:
        return self.row_from_scores(self.scores(ctx), ctx.self_index)

    def row_from_scores(self, scores: torch.Tensor, self_index: int) -> torch.Tensor:
        """The row (N,) from this strategy's raw scores (N,): temperature, top-k, threshold."""
        s = scores.to(torch.float64) / self.cfg.temperature
        return select_and_softmax(s, self_index, self.cfg.top_k, self.cfg.threshold)


def select_and_softmax(
    scores: torch.Tensor, self_index: int, top_k: int = 0, threshold: float | None = None
) -> torch.Tensor:
    """Mask peers out by threshold / top-k (never self), then softmax the rest. Shape (N,)."""
    s = scores.clone().to(torch.float64)
    if torch.isnan(s).any():
        raise StrategyError("trust scores contain NaN")
    # self takes one of the k places; the k - 1 best-scored other peers take the rest
    limit = top_k - 1 if top_k else None
    keep = torch.zeros_like(s, dtype=torch.bool)
    keep[rank_others(s, self_index, limit=limit, threshold=threshold)] = True
    keep[self_index] = True
    s[~keep] = float("-inf")
    return torch.softmax(s, dim=0)


def answered(cosines: torch.Tensor, self_index: int) -> torch.Tensor:
    """Mask (N,) of the peers with a decrypted cosine, self included."""
    known = ~torch.isnan(cosines)
    known[self_index] = True
    return known


def needs_encrypted_discovery(strategy: TrustStrategy) -> bool:
    """Whether ``strategy`` discovers peers under encryption in secure mode.

    Raises:
        ConfigError: it needs discovery but has no encrypted rule (refused before anything is sent).
    """
    if strategy.discovery is Discovery.NONE:
        return False
    if not strategy.encrypted:
        raise ConfigError(
            f"[strategy] name: {strategy.name!r} needs peer discovery but has no encrypted-"
            "discovery rule (TrustStrategy.encrypted_vector/encrypted_row); "
            "set [security] mode='off' or give it one"
        )
    return True


def planned_scoring_queries(
    strategy: TrustStrategy, num_peers: int, *, secure: bool, select_top_k: int
) -> int:
    """Accounted private scores one peer computes per round under ``strategy`` (0 = none).

    A peer holds its own adapter and those it received: in plain mode every peer's, in secure mode
    only those of the ``select_top_k`` peers chosen by encrypted discovery (``select_top_k = 0``:
    every peer); :meth:`TrustStrategy.private_scores` says how many of those it scores. The privacy
    plan reserves this many Gaussian queries per round before DP-SGD's σ is calibrated.
    """
    held = min(num_peers, select_top_k + 1) if secure and select_top_k else num_peers
    return strategy.private_scores(held)


def run_scoring_queries(cfg: RunConfig, num_peers: int) -> int:
    """:func:`planned_scoring_queries` of ``cfg.strategy`` under ``cfg.security``."""
    return planned_scoring_queries(
        make_strategy(cfg.strategy),
        num_peers,
        secure=cfg.security.mode == "full",
        select_top_k=cfg.security.select_top_k,
    )


_REGISTRY: dict[str, type[TrustStrategy]] = {}


def register_strategy(cls: type[TrustStrategy], *, force: bool = False) -> type[TrustStrategy]:
    """Register a strategy class under ``cls.name``.

    Raises:
        RegistryError: a name a config cannot spell, or the name is taken and ``force`` is False.
    """
    cls.Options.check_declaration(cls.name)
    return claim(_REGISTRY, "strategy", cls.name, cls, force)


def available_strategies() -> tuple[str, ...]:
    _load_builtins()
    return tuple(sorted(_REGISTRY))


def make_strategy(cfg: StrategyConfig) -> TrustStrategy:
    """Instantiate the strategy ``cfg.name``.

    Raises:
        ConfigError: no strategy of that name is registered.
    """
    _load_builtins()
    if cfg.name not in _REGISTRY:
        raise ConfigError(
            f"[strategy] name: unknown strategy {cfg.name!r}; known: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[cfg.name](cfg)


def strategy_catalogue() -> list[dict[str, Any]]:
    """Every registered strategy, as ``secure-pcft strategies`` lists it: its name, the first line
    of its module's docstring, what it discovers peers by, whether it has an encrypted rule, and
    its own ``[strategy]`` keys with their types and defaults."""
    _load_builtins()
    out = []
    for name in sorted(_REGISTRY):
        cls = _REGISTRY[name]
        doc = (sys.modules[cls.__module__].__doc__ or cls.__doc__ or "").strip().splitlines()
        hints = typing.get_type_hints(cls.Options)
        options = [
            {"key": f.name, "default": f.default, "type": _type_name(hints[f.name])}
            for f in fields(cls.Options)
        ]
        summary = doc[0].removeprefix(f"``{name}``:").strip() if doc else ""
        out.append({"name": name, "summary": summary, "options": options,
                    "discovery": str(cls.discovery), "encrypted": cls.encrypted})  # fmt: skip
    return out


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return " | ".join(json.dumps(v) for v in typing.get_args(hint))
    return getattr(hint, "__name__", str(hint))


def strategy_label(cfg: StrategyConfig) -> str:
    """The label of ``cfg`` (:attr:`TrustStrategy.label`).

    Raises:
        ConfigError: an unknown strategy or option.
    """
    return make_strategy(cfg).label


def strategy_from_label(label: str) -> StrategyConfig:
    """The inverse of :func:`strategy_label`: ``validation-t50-top3`` → name, temperature, top_k.

    The name is the longest registered strategy name the label starts with; each following part
    is a shared option or one of that strategy's own.

    Raises:
        ConfigError: no registered strategy starts the label, or a part that is no option of it.
    """
    _load_builtins()
    names = [n for n in _REGISTRY if label == n or label.startswith(n + "-")]
    if not names:
        raise ConfigError(
            f"[strategy] unknown strategy in label {label!r}; known: {', '.join(sorted(_REGISTRY))}"
        )
    name = max(names, key=len)
    cls = _REGISTRY[name]
    shared: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for part in label[len(name) + 1 :].split("-") if label != name else []:
        own = cls.Options.parse_label_part(part)
        if own is not None:
            options[own[0]] = own[1]
        elif part == "accept":
            shared["accept"] = True
        elif (number := _parse_shared_number(part)) is not None:
            shared[number[0]] = number[1]
        else:
            raise ConfigError(f"[strategy] label {label!r}: {part!r} is no option of {name!r}")
    cfg = StrategyConfig(name=name, options=options, **shared)
    cls(cfg)  # the options' own checks
    return cfg


def _parse_shared_number(part: str) -> tuple[str, float] | None:
    """``(key, value)`` of the shared numeric key that writes ``part`` (longest prefix first)."""
    for key, prefix, integer in sorted(_SHARED_NUMBERS, key=lambda s: -len(s[1])):
        if part.startswith(prefix):
            value = _parse_label_number(part[len(prefix) :], integer=integer)
            if value is not None:
                return key, value
    return None


def _label_number(prefix: str, value: float) -> str:
    """A numeric label part: ``t10``, ``thrm0.5`` ('-' separates parts, so a minus is 'm')."""
    return f"{prefix}{value:g}".replace("-", "m")


def _parse_label_number(text: str, *, integer: bool = False) -> float | None:
    """The number a label part writes after its prefix (the inverse of :func:`_label_number`)."""
    text = text.replace("m", "-")
    if integer:
        return int(text) if re.fullmatch(r"-?[0-9]+", text) else None
    try:
        return float(text)
    except ValueError:
        return None


def _load_builtins() -> None:
    # Importing the package registers the built-in strategies (one file each).
    import secure_pcft.collab.strategies  # noqa: F401
