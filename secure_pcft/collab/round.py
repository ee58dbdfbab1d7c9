"""One aggregation round as the steps one peer runs (docs/design.md, "One round").

Both runtimes drive these same steps. The loopback simulation (:mod:`secure_pcft.runtime.loopback`)
runs each step for every peer and then delivers what they sent, as a relay does between hops
(:func:`drive_round`); the Flower runtime (:mod:`secure_pcft.runtime.flower.steps`) runs one
step per relay hop on the peer's own machine. Between steps, messages travel only through the
peers' channels, and a step reads only what the previous steps sent.

=========  ==============================================  ======================================
step       plain (``[security] mode = "off"``)              secure (``"full"``)
=========  ==============================================  ======================================
discover   send signatures / adapters (``protocol``)        CKKS context (once) + query to all
respond    —                                                answer the encrypted queries
select     score + request                                  decrypt cosines → row → select →
                                                            request (``selection``)
answer     answer every request                             answer with consent: ADAPTER / DECLINE
aggregate  aggregate                                        (rescore) aggregate
=========  ==============================================  ======================================

In secure mode, strategies without discovery (local, fedavg, oracle) skip ``respond`` and score in
``select`` as in plain mode; nothing is broadcast in clear.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from secure_pcft.collab.acceptance import Scored, adopt
from secure_pcft.collab.encrypted_discovery import (
    PeerHe,
    collect_answers,
    respond,
    send_contexts,
    send_queries,
)
from secure_pcft.collab.peer import Peer
from secure_pcft.collab.protocol import answer, discover, request, score
from secure_pcft.collab.ranking import rank_others
from secure_pcft.collab.secure_channel import SecureChannel, norm_bounded_spec
from secure_pcft.collab.selection import (
    FACT_KEYS,
    Exchange,
    answer_with_consent,
    check_top_k_fits,
    consented,
    first_choice,
    restrict,
    select_peers,
    willing_peers,
)
from secure_pcft.collab.strategy import (
    TrustStrategy,
    make_strategy,
    needs_encrypted_discovery,
)
from secure_pcft.config import RunConfig, SecurityConfig
from secure_pcft.errors import ConfigError
from secure_pcft.transport.meter import TrafficMeter

PLAIN_STEPS = ("discover", "select", "answer", "aggregate")
ENCRYPTED_STEPS = ("discover", "respond", "select", "answer", "aggregate")


def steps_for(strategy: TrustStrategy, security: SecurityConfig | None) -> tuple[str, ...]:
    """The steps of one round of ``strategy`` under ``security`` (None = plain mode).

    Raises:
        ConfigError: secure mode with a discovery strategy that has no encrypted rule, or whose
            ``top_k`` would aggregate over more peers than encrypted discovery asks for (a peer
            holds only the adapters of its ``select_top_k`` best-scored peers, see
            :mod:`~secure_pcft.collab.ranking`).
    """
    if security is None or security.mode != "full" or not needs_encrypted_discovery(strategy):
        return PLAIN_STEPS
    check_top_k_fits(strategy.cfg.top_k, security)
    return ENCRYPTED_STEPS


def round_steps(cfg: RunConfig) -> tuple[str, ...]:
    """The steps of one round for ``cfg`` (the schedule a relay and its peers follow).

    Raises:
        ConfigError: as :func:`steps_for`; runtimes call this before any peer trains.
    """
    return steps_for(make_strategy(cfg.strategy), cfg.security)


def reference_batch(
    reference: torch.Tensor, strategy: TrustStrategy, cfg: RunConfig, rnd: int
) -> torch.Tensor:
    """The public reference batch of round ``rnd``: public randomness, so every peer (in either
    runtime) derives the same rows of the reference blocks (R, T)."""
    n = min(reference.shape[0], strategy.reference_batches() * cfg.train.batch_size)
    g = torch.Generator().manual_seed(cfg.lora.public_seed + 7 * rnd)
    return reference[torch.randperm(reference.shape[0], generator=g)[:n]]


@dataclass(frozen=True)
class SecurePeer:
    """A peer's secure-mode parts for one session (its keys stay with it).

    Attributes:
        channel: its secure channel (the peer's own ``channel``).
        agent: its encrypted-similarity state (CKKS keys, cached contexts).
        fingerprint: peer id -> roster fingerprint.
    """

    channel: SecureChannel
    agent: PeerHe
    fingerprint: Callable[[str], str]


class PeerRound:
    """One peer's way through one round: the steps, and what it carries between them (never sent).

    Args:
        peer: the peer (already trained for this round).
        strategy: the trust strategy.
        domain_mixes: per peer of the run, its known domain mix (oracle).
        secure: secure-mode parts, or None in plain mode.

    Raises:
        ConfigError: secure mode with a discovery strategy that has no encrypted rule, or parts
            whose channel is not the peer's.
    """

    def __init__(
        self,
        peer: Peer,
        strategy: TrustStrategy,
        domain_mixes: tuple[dict[str, float], ...],
        secure: SecurePeer | None,
    ) -> None:
        if secure is not None and secure.channel is not peer.channel:
            raise ConfigError(f"peer {peer.peer_id}: its channel is not its session's")
        self.peer = peer
        self.strategy = strategy
        self.domain_mixes = domain_mixes
        self.secure = secure
        security = peer.settings.security if secure is not None else None
        self.steps = steps_for(strategy, security)  # refuses before anything is sent
        self.encrypted = secure is not None and "respond" in self.steps
        self.round = -1
        self.done: list[str] = []
        self.reference = torch.empty(0, dtype=torch.long)
        self.vector: npt.NDArray[np.float64] | None = None
        self.row: torch.Tensor | None = None
        self.cosines: torch.Tensor | None = None  # decrypted encrypted-discovery scores (N,)
        self.selected: set[int] = set()
        self.willing: set[int] = set()
        self.exchange = Exchange()
        self.asked: set[int] = set()  # peers it asked for their adapters this round
        self.ranking: list[int] = []  # the other peers, closest first (acceptance's nearest-k)
        self.applied: torch.Tensor | None = None
        self.scored: Scored | None = None
        self._step_of: dict[str, Callable[[], None]] = {
            "discover": self._discover,
            "respond": self._respond,
            "select": self._select,
            "answer": self._answer,
            "aggregate": self._aggregate,
        }

    @property
    def meter(self) -> TrafficMeter:
        return self.peer.channel.meter

    # ---- driving -------------------------------------------------------------------------------
    def begin(self, rnd: int, reference: torch.Tensor) -> None:
        """Enter round ``rnd`` with its public reference batch (moves the channel's windows)."""
        self.round, self.reference, self.done = rnd, reference, []
        self.meter.begin_round(rnd)
        self.peer.begin_round(rnd)
        if self.peer.privacy is not None:
            releases = self.strategy.releases(secure=self.secure is not None)
            self.peer.privacy.declare_releases(self.strategy.label, releases)
        if self.secure is not None:
            self.secure.channel.begin_round(rnd)
            ratio = self.peer.settings.security.max_adapter_norm_ratio
            self.secure.channel.expect_adapters(norm_bounded_spec(self.peer.adapter(), ratio))

    def run(self, step: str) -> None:
        """Run ``step``; steps run once each, in order.

        Raises:
            ConfigError: not the next step of this round.
        """
        if len(self.done) >= len(self.steps) or self.steps[len(self.done)] != step:
            raise ConfigError(f"step {step!r} out of order (done: {self.done}, of {self.steps})")
        self._step_of[step]()
        self.done.append(step)

    def facts(self) -> dict[str, list[str]]:
        """Public facts of this round, as peer ids (``selection.FACT_KEYS``; secure mode)."""
        ids = self.peer.peer_ids
        indices: dict[str, Sequence[int]] = {
            "selected": sorted(self.selected),
            "willing": sorted(self.willing),
            "adapters_sent": self.exchange.sent,
            "declined": self.exchange.declined,
            "refused_budget": self.exchange.refused_budget,
        }
        return {key: [ids[j] for j in indices[key]] for key in FACT_KEYS}

    # ---- the steps -----------------------------------------------------------------------------
    def _discover(self) -> None:
        peer, sec = self.peer, self.secure
        if sec is None:
            discover(peer, self.strategy, self.reference)
        elif self.encrypted:
            self.vector = self.strategy.encrypted_vector(peer, self.reference, peer.settings.sketch)
            with self.meter.session_setup():  # contexts: once per session, counted apart
                send_contexts(peer, sec.agent)
            send_queries(peer, self.vector, sec.agent)

    def _respond(self) -> None:
        assert self.secure is not None and self.vector is not None
        respond(self.peer, self.vector, self.round, self.secure.agent, self.secure.fingerprint)

    def _select(self) -> None:
        peer, cfg = self.peer, self.peer.settings.security
        if self.encrypted:
            assert self.secure is not None
            cos = self.cosines = collect_answers(peer, self.round, self.secure.agent)
            row = self.strategy.encrypted_row(cos, peer.index)
            self.selected = select_peers(row, cos, peer.index, cfg)
            self.willing = willing_peers(row, cos, peer.index, cfg)
            row = restrict(row, self.selected, peer.index)
            first = first_choice(cos, self.selected, peer.index, cfg)
            self.ranking = rank_others(cos, peer.index)
        else:
            row, self.ranking = score(peer, self.strategy, self.reference, self.domain_mixes)
            first = None
            if self.secure is not None:
                self.selected = select_peers(row, None, peer.index, cfg)
                self.willing = self.selected
            elif self.strategy.cfg.accept:
                # acceptance's nearest-k span the select_top_k closest, as in secure mode
                top = cfg.select_top_k or len(self.ranking)
                self.selected = set(self.ranking[:top])
        self.row = row
        ask = {j for j in range(row.shape[0]) if j != peer.index and float(row[j]) > 0}
        if self.strategy.cfg.accept:
            ask |= self.selected  # acceptance's nearest-k average up to all it may hold
        self.asked = ask
        request(peer, ask, first)

    def _answer(self) -> None:
        if self.secure is None:
            answer(self.peer)
            return
        n = len(self.peer.peer_ids)
        # read this step's requests first: consent depends on them (who named us first choice)
        self.peer.collect()
        allowed = consented(
            self.peer.settings.security, self.selected, self.willing, n,
            cosines=self.cosines, self_index=self.peer.index,
            first_choice_of=self.peer.inbox.first_choice_of,
        )  # fmt: skip
        self.exchange = answer_with_consent(self.peer, allowed - {self.peer.index})

    def _aggregate(self) -> None:
        assert self.row is not None
        row = self.row
        if self.encrypted and self.strategy.rescore_after_exchange:
            row, _ = score(self.peer, self.strategy, self.reference, self.domain_mixes)
        self.applied, self.scored = adopt(
            self.peer, row, self.round, accept=self.strategy.cfg.accept, ranking=self.ranking
        )

    def outcome(self) -> dict[str, object]:
        """What the peer adopted this round (public facts for the results: no scores).

        ``adopted``: the candidate (``self`` / ``trust`` / ``nearest-k``; ``trust`` without
        acceptance); ``alone``: it asked for adapters and none arrived, so it averaged with
        nobody (stranded: declined, dropped, rejected)."""
        assert self.scored is not None
        received = len(self.peer.inbox.adapters)
        return {
            "adopted": self.scored.chosen if self.strategy.cfg.accept else "trust",
            "alone": bool(self.asked) and received == 0,
        }


def drive_round(
    rounds: Sequence[PeerRound], rnd: int, reference: torch.Tensor, deliver: Callable[[], None]
) -> torch.Tensor:
    """Run round ``rnd`` for every peer, step by step, calling ``deliver`` after each step (the
    barrier a relay keeps: what a step sent is read by the next one). Returns the applied trust
    matrix (N, N)."""
    for r in rounds:
        r.begin(rnd, reference)
    for step in rounds[0].steps:
        for r in rounds:
            r.run(step)
        deliver()
    applied = [r.applied for r in rounds]
    assert all(a is not None for a in applied)
    return torch.stack([a for a in applied if a is not None])
