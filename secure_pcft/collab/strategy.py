"""Trust strategies: each peer computes its own row of weights over the peers (self included).

A strategy is one small class behind :class:`TrustStrategy`, registered by name; a new strategy is
one new file and one :func:`register_strategy` call. The registry refuses silent overwrites.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

import torch

from secure_pcft.config import RunConfig, StrategyConfig
from secure_pcft.errors import ConfigError, StrategyError

AdapterState = dict[str, torch.Tensor]


class Discovery(StrEnum):
    """What a strategy needs from the other peers before it can score them."""

    NONE = "none"  # weights known without looking at others (local, fedavg, oracle)
    SIGNATURES = "signatures"  # prediction signatures on the public reference set
    ADAPTERS = "adapters"  # the other peers' adapters themselves


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
    """

    name: ClassVar[str]
    discovery: ClassVar[Discovery] = Discovery.NONE

    def __init__(self, cfg: StrategyConfig) -> None:
        self.cfg = cfg

    @abstractmethod
    def row(self, ctx: TrustContext) -> torch.Tensor:
        """Return this peer's trust weights, shape (N,), float64, rows sum to 1."""

    def private_scores(self, held: int) -> int:
        """Accounted scores on the peer's *private* data per round when it holds ``held``
        adapters (its own included); each is a release the privacy plan reserves up front.
        Default 0: the strategy uses no private data beyond its DP adapter."""
        return 0


class ScoreSoftmaxStrategy(TrustStrategy):
    """Strategies of the form W_i = softmax(score_i / temperature) over the selected peers.

    Selection options (all strategies of this family): ``top_k`` keeps the k best scores, self
    always included; ``threshold`` drops peers scoring below it (self is always kept).
    """

    @abstractmethod
    def scores(self, ctx: TrustContext) -> torch.Tensor:
        """Raw scores, shape (N,); higher means more trusted. -inf excludes a peer."""

    def row(self, ctx: TrustContext) -> torch.Tensor:
        s = self.scores(ctx).to(torch.float64) / self.cfg.temperature
        return select_and_softmax(s, ctx.self_index, self.cfg.top_k, self.cfg.threshold)


def select_and_softmax(
    scores: torch.Tensor, self_index: int, top_k: int = 0, threshold: float | None = None
) -> torch.Tensor:
    """Mask peers out by threshold / top-k (never self), then softmax the rest. Shape (N,)."""
    s = scores.clone().to(torch.float64)
    if torch.isnan(s).any():
        raise StrategyError("trust scores contain NaN")
    keep = torch.ones_like(s, dtype=torch.bool)
    if threshold is not None:
        keep &= s >= threshold
    if top_k:
        # self takes one of the k places; the k-1 best-scored other peers take the rest
        others = torch.full_like(s, float("-inf"))
        others[keep] = s[keep]
        others[self_index] = float("-inf")
        order = torch.argsort(others, descending=True, stable=True)
        top = torch.zeros_like(keep)
        top[order[: top_k - 1]] = True
        keep &= top
    keep[self_index] = True
    s[~keep] = float("-inf")
    return torch.softmax(s, dim=0)


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


StrategyFactory = Callable[[StrategyConfig], TrustStrategy]
_REGISTRY: dict[str, type[TrustStrategy]] = {}


def register_strategy(cls: type[TrustStrategy], *, force: bool = False) -> type[TrustStrategy]:
    """Register a strategy class under ``cls.name``.

    Raises:
        ConfigError: the name is taken and ``force`` is False.
    """
    if cls.name in _REGISTRY and not force and _REGISTRY[cls.name] is not cls:
        raise ConfigError(f"strategy {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


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


def _load_builtins() -> None:
    # Importing the package registers the built-in strategies (one file each).
    import secure_pcft.collab.strategies  # noqa: F401
