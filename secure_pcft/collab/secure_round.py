"""The privacy-hardened round (docs/design.md, "One round"): discover under encryption, select, exchange
sealed adapters only between selected and consenting peers, aggregate.

    begin round → discover (CKKS cosines)  [weights | predictions | validation]
                → trust row from the decrypted scores (the strategy's encrypted rule)
                → select: top-k / threshold ([security] select_top_k, select_threshold)
                → request adapters from the selected peers only   (protocol.request)
                → answer with consent: ADAPTER or DECLINE           (this module)
                → (validation: the strategy scores the adapters received)
                → aggregate over what arrived                       (protocol.aggregate)

Strategies without discovery (local, fedavg, oracle) skip the first two steps and request from
every peer their row weights; the exchange still goes through the secure channels.

Consent (``[security] consent``):

* ``mutual`` (default): j sends its adapter to i only if i is among the peers j is *willing* to
  exchange with: its ``select_top_k`` best by encrypted score (those above ``select_threshold``),
  plus any peer it asks itself. An adapter then only reaches peers its owner ranks among its
  ``select_top_k`` closest, so a dissimilar peer cannot harvest adapters by asking. A strategy may
  ask fewer peers than that (its own ``top_k``); consent still covers the owner's ``select_top_k``,
  so one rank of disagreement between two peers does not leave either of them alone — measured
  under DP, where training alone is the worst outcome (README, "Privacy–utility"). Declined requests
  are answered with ``DECLINE`` and the asker renormalises its row over what arrived.
* ``asker``: j sends to every peer of the run that asks (the asker's choice alone).

Threats mitigated (threat_models/): adapters sent to everyone and who-trusts-whom leaking to a
curious peer (TM-01); adapter harvesting by dissimilar peers and poisoned adapters (TM-02, norm
checks in the secure channel).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch

from secure_pcft.collab.encrypted_discovery import PeerHe, encrypted_cosines
from secure_pcft.collab.messages import MessageType
from secure_pcft.collab.peer import Peer, SendOutcome
from secure_pcft.collab.protocol import aggregate, request, score
from secure_pcft.collab.secure_channel import SecureChannel, norm_bounded_spec
from secure_pcft.collab.strategy import TrustStrategy, discovery_spec, needs_encrypted_discovery
from secure_pcft.config import RunConfig, SecurityConfig
from secure_pcft.crypto.consortium import Consortium
from secure_pcft.crypto.envelope import InboxPolicy
from secure_pcft.crypto.he_similarity import ResponderPolicy
from secure_pcft.errors import ConfigError
from secure_pcft.transport.base import Transport
from secure_pcft.transport.meter import TrafficMeter


@dataclass
class SecureRoundState:
    """What the secure round needs across rounds of one session (the ``he_state``).

    Attributes:
        channels: peer id -> its secure channel.
        agents: peer id -> its encrypted-similarity state.
        fingerprint: peer id -> roster fingerprint.
        setup_scope: wraps once-per-session sends (HE contexts) for separate byte accounting.
        history: per round, who selected (asked), was willing to send to, sent and declined whom
            (peer ids; no scores).
    """

    channels: Mapping[str, SecureChannel]
    agents: Mapping[str, PeerHe]
    fingerprint: Callable[[str], str]
    setup_scope: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext
    history: list[dict[str, Any]] = field(default_factory=list)


def select_peers(
    row: torch.Tensor, cosines: torch.Tensor | None, self_index: int, cfg: SecurityConfig
) -> set[int]:
    """Peers to ask for adapters: positive trust, score ≥ threshold, the ``select_top_k`` best.

    Without encrypted scores (strategies without discovery) only the row's support counts.
    Ties break by peer index.
    """
    candidates = [j for j in range(row.shape[0]) if j != self_index and float(row[j]) > 0]
    if cosines is None:
        return set(candidates)
    scored = [j for j in candidates if not torch.isnan(cosines[j])]
    if cfg.select_threshold is not None:
        scored = [j for j in scored if float(cosines[j]) >= cfg.select_threshold]
    scored.sort(key=lambda j: (-float(cosines[j]), j))
    return set(scored[: cfg.select_top_k] if cfg.select_top_k else scored)


def willing_peers(
    row: torch.Tensor, cosines: torch.Tensor | None, self_index: int, cfg: SecurityConfig
) -> set[int]:
    """Peers this peer consents to send its adapter to under ``mutual`` consent.

    With encrypted scores: the ``select_top_k`` best-scored peers that answered (score ≥
    ``select_threshold``), whatever the strategy's own row; without them (strategies without
    discovery): the row's support. Ties break by peer index.
    """
    if cosines is None:
        return {j for j in range(row.shape[0]) if j != self_index and float(row[j]) > 0}
    ranked = [j for j in range(row.shape[0]) if j != self_index and not torch.isnan(cosines[j])]
    if cfg.select_threshold is not None:
        ranked = [j for j in ranked if float(cosines[j]) >= cfg.select_threshold]
    ranked.sort(key=lambda j: (-float(cosines[j]), j))
    return set(ranked[: cfg.select_top_k] if cfg.select_top_k else ranked)


def consented(
    cfg: SecurityConfig, selected: set[int], willing: set[int], num_peers: int
) -> set[int]:
    """Requesters a peer sends its adapter to: under ``mutual`` consent the peers it is willing to
    exchange with and those it asked itself; under ``asker`` every peer of the run."""
    return selected | willing if cfg.consent == "mutual" else set(range(num_peers))


def restrict(row: torch.Tensor, keep: set[int], self_index: int) -> torch.Tensor:
    """``row`` with weight only on ``keep`` ∪ {self}, renormalised."""
    out = torch.zeros_like(row)
    for j in keep | {self_index}:
        out[j] = row[j]
    return out / out.sum()


@dataclass(frozen=True)
class Exchange:
    """What one peer did with the adapter requests it received in a round (facts, peer indices).

    Attributes:
        sent: its adapter was handed to the channel, sealed to these requesters.
        declined: no consent; a ``DECLINE`` went back.
        refused_budget: consent, but the privacy budget refused the release; a ``DECLINE``
            (reason ``budget``) went back and no adapter left.
    """

    sent: tuple[int, ...] = ()
    declined: tuple[int, ...] = ()
    refused_budget: tuple[int, ...] = ()


def answer_with_consent(peer: Peer, consented: set[int]) -> Exchange:
    """Send this peer's adapter to each requester it consents to; DECLINE the others."""
    peer.collect()
    sent, declined, refused = [], [], []
    for j in sorted(peer.inbox.requests):
        outcome = peer.answer_request(j, consent=j in consented)
        if outcome is None:
            declined.append(j)
        elif outcome is SendOutcome.SENT:
            sent.append(j)
        else:
            refused.append(j)
    return Exchange(tuple(sent), tuple(declined), tuple(refused))


def run_secure_round(
    peers: Sequence[Peer],
    strategy: TrustStrategy,
    reference: torch.Tensor,
    domain_mixes: tuple[dict[str, float], ...],
    rnd: int,
    security_cfg: SecurityConfig,
    he_state: SecureRoundState,
) -> torch.Tensor:
    """All phases of secure round ``rnd`` for every peer; returns the applied trust matrix (N, N).

    Raises:
        ConfigError: the strategy needs discovery but has no encrypted rule.
    """
    encrypted = needs_encrypted_discovery(strategy)  # refuse before anything is sent
    for p in peers:
        p.begin_round(rnd)
        channel = he_state.channels[p.peer_id]
        channel.begin_round(rnd)
        channel.expect_adapters(norm_bounded_spec(p.adapter(), security_cfg.max_adapter_norm_ratio))
    if not encrypted:
        rows = [score(p, strategy, reference, domain_mixes) for p in peers]
        selected = [
            select_peers(row, None, p.index, security_cfg)
            for p, row in zip(peers, rows, strict=True)
        ]
        willing = selected
    else:
        rows, selected, willing = _discover_and_select(
            peers, strategy, reference, rnd, security_cfg, he_state
        )
    for p, row in zip(peers, rows, strict=True):
        request(p, row)
    exchange = []
    for p in peers:
        allowed = consented(security_cfg, selected[p.index], willing[p.index], len(peers))
        exchange.append(answer_with_consent(p, allowed - {p.index}))
    if encrypted and strategy.rescore_after_exchange:
        rows = [score(p, strategy, reference, domain_mixes) for p in peers]
    applied = torch.stack([aggregate(p, row) for p, row in zip(peers, rows, strict=True)])
    he_state.history.append(_round_log(peers, rnd, selected, willing, exchange))
    return applied


def _discover_and_select(
    peers: Sequence[Peer],
    strategy: TrustStrategy,
    reference: torch.Tensor,
    rnd: int,
    cfg: SecurityConfig,
    state: SecureRoundState,
) -> tuple[list[torch.Tensor], list[set[int]], list[set[int]]]:
    """Encrypted cosines → trust rows → selection. Returns the rows restricted to self and the
    selected, the selected (asked) peers and the peers each is willing to send to."""
    spec = discovery_spec(peers[0].cfg)
    vectors = [strategy.encrypted_vector(p, reference, spec) for p in peers]  # (dim,), never sent
    cos = encrypted_cosines(peers, vectors, rnd, state.agents, state.fingerprint, state.setup_scope)
    rows = [strategy.encrypted_row(cos[p.index], p.index) for p in peers]
    selected = [select_peers(rows[p.index], cos[p.index], p.index, cfg) for p in peers]
    willing = [willing_peers(rows[p.index], cos[p.index], p.index, cfg) for p in peers]
    restricted = [restrict(rows[p.index], selected[p.index], p.index) for p in peers]
    return restricted, selected, willing


def _round_log(
    peers: Sequence[Peer],
    rnd: int,
    selected: list[set[int]],
    willing: list[set[int]],
    exchange: list[Exchange],
) -> dict[str, Any]:
    ids = peers[0].peer_ids
    return {
        "round": rnd,
        "selected": {p.peer_id: [ids[j] for j in sorted(selected[p.index])] for p in peers},
        "willing": {p.peer_id: [ids[j] for j in sorted(willing[p.index])] for p in peers},
        "adapters_sent": [[p.peer_id, ids[j]] for p in peers for j in exchange[p.index].sent],
        "declined": [[p.peer_id, ids[j]] for p in peers for j in exchange[p.index].declined],
        "refused_budget": [
            [p.peer_id, ids[j]] for p in peers for j in exchange[p.index].refused_budget
        ],
    }


class SecureSession:
    """Security for a one-machine simulation: keys, secure channels and the secure round.

    Args:
        cfg: the run configuration (``cfg.security.mode`` must be ``full``).
        peer_ids: the peers of the run.
        consortium: their identities and roster; default: loaded from ``[security] key_dir``, or
            generated in memory when that is empty.
        meter: where the channels count what they send (HE contexts under its session scope).

    Raises:
        ConfigError: a peer id is not a valid peer name or has no key in ``key_dir``.
    """

    def __init__(
        self,
        cfg: RunConfig,
        peer_ids: Sequence[str],
        consortium: Consortium | None = None,
        meter: TrafficMeter | None = None,
    ) -> None:
        sec = cfg.security
        if sec.mode != "full":
            raise ConfigError("[security] mode: a secure session needs mode = 'full'")
        self.cfg = sec
        if consortium is None:
            consortium = (
                Consortium.load(sec.key_dir, peer_ids)
                if sec.key_dir
                else Consortium.generate(peer_ids)
            )
        self.consortium = consortium
        self.policy = InboxPolicy(
            max_body_bytes=sec.max_message_bytes,
            max_clock_skew_s=sec.max_clock_skew_s,
            round_window=sec.round_window,
        )
        responder_policy = ResponderPolicy(max_queries_per_round=sec.he_queries_per_round)
        self.channels: dict[str, SecureChannel] = {}
        self.meter = meter if meter is not None else TrafficMeter()
        self.state = SecureRoundState(
            channels=self.channels,
            agents={pid: PeerHe(responder_policy) for pid in peer_ids},
            fingerprint=lambda name: consortium.roster.get(name).fingerprint,
            setup_scope=self.meter.session_setup,
        )

    def make_channel(self, peer_id: str, transport: Transport) -> SecureChannel:
        """A peer's secure channel on ``transport``, counting in this session's meter."""
        channel = SecureChannel(
            self.consortium.identity(peer_id),
            self.consortium.roster,
            transport,
            self.policy,
            meter=self.meter,
        )
        self.channels[peer_id] = channel
        return channel

    def run_round(
        self,
        peers: Sequence[Peer],
        strategy: TrustStrategy,
        reference: torch.Tensor,
        domain_mixes: tuple[dict[str, float], ...],
        rnd: int,
    ) -> torch.Tensor:
        """:func:`run_secure_round` with this session's configuration and state."""
        for p in peers:
            if p.channel is not self.channels.get(p.peer_id):
                raise ConfigError(f"peer {p.peer_id}: its channel is not this session's")
        return run_secure_round(peers, strategy, reference, domain_mixes, rnd, self.cfg, self.state)

    def reset(self) -> None:
        """A new session on the same peers and keys (the simulation restarts from a snapshot)."""
        for channel in self.channels.values():
            channel.new_session()
        for agent in self.state.agents.values():
            agent.new_session()
        self.state.history.clear()

    def report(self) -> dict[str, Any]:
        """Public facts for the results file: fingerprints, session-setup bytes, selections."""
        contexts = self.meter.sent(msg_type=str(MessageType.HE_CONTEXT))
        return {
            "mode": self.cfg.mode,
            "consent": self.cfg.consent,
            "fingerprints": self.consortium.fingerprints(),
            "he_context_bytes": contexts.bytes,
            "he_context_messages": contexts.messages,
            "rounds": list(self.state.history),
        }
