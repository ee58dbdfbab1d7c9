"""Trust strategies: each peer computes its own row of weights over the peers (self included).

A strategy is one small class behind :class:`TrustStrategy`, registered by name; a new strategy is
one new file and one :func:`register_strategy` call. The registry refuses silent overwrites.

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

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import numpy.typing as npt
import torch

from secure_pcft.collab.ranking import rank_others
from secure_pcft.config import RunConfig, StrategyConfig
from secure_pcft.crypto.projection import ProjectionSpec
from secure_pcft.errors import ConfigError, StrategyError
from secure_pcft.registry import claim

if TYPE_CHECKING:
    from secure_pcft.collab.peer import Peer

AdapterState = dict[str, torch.Tensor]
UnitVector = npt.NDArray[np.float64]


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
        encrypted: it has an encrypted-discovery rule (secure mode).
        rescore_after_exchange: in secure mode the final row is :meth:`row` on the adapters
            received; the row from the cosines only selects whom to ask.
    """

    name: ClassVar[str]
    discovery: ClassVar[Discovery] = Discovery.NONE
    encrypted: ClassVar[bool] = False
    rescore_after_exchange: ClassVar[bool] = False

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


def _load_builtins() -> None:
    # Importing the package registers the built-in strategies (one file each).
    import secure_pcft.collab.strategies  # noqa: F401
