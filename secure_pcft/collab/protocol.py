"""The plain phases of a round, as one peer runs them (docs/design.md, "One round").

    discover → score → request adapters → answer requests → (aggregate: collab/acceptance.py)

:mod:`secure_pcft.collab.round` strings them into steps (adding encrypted discovery, selection and
consent in secure mode) for both runtimes. Between phases, messages travel only through the peer's
channel.
"""

from __future__ import annotations

import torch

from secure_pcft.collab.aggregation import check_row
from secure_pcft.collab.messages import MessageType, encode_tensors
from secure_pcft.collab.peer import Peer
from secure_pcft.collab.ranking import rank_others
from secure_pcft.collab.strategy import (
    Discovery,
    ScoreSoftmaxStrategy,
    TrustContext,
    TrustStrategy,
)
from secure_pcft.errors import BudgetExhaustedError


def discover(peer: Peer, strategy: TrustStrategy, reference: torch.Tensor) -> None:
    """Phase 1: send what the strategy scores others by (nothing, signatures or adapters)."""
    if strategy.discovery is Discovery.NONE:
        return
    if strategy.discovery is Discovery.SIGNATURES:
        payload, kind = _own_signature(peer, strategy, reference), MessageType.SIGNATURE
    else:
        payload, kind = peer.released_adapter(), MessageType.ADAPTER
    encoded = encode_tensors(payload)  # once, not once per recipient
    for j in range(len(peer.peer_ids)):
        if j != peer.index:
            peer.send(j, kind, payload, encoded=encoded)


def _own_signature(
    peer: Peer, strategy: TrustStrategy, reference: torch.Tensor
) -> dict[str, torch.Tensor]:
    """This round's signature of ``peer`` (computed once: sent in discovery, reused in scoring)."""
    if peer.inbox.own_signature is None:
        peer.inbox.own_signature = strategy.signature(peer, reference)
    return peer.inbox.own_signature


def score(
    peer: Peer,
    strategy: TrustStrategy,
    reference: torch.Tensor,
    domain_mixes: tuple[dict[str, float], ...],
) -> tuple[torch.Tensor, list[int]]:
    """Phase 2: compute this peer's trust row (N,) from its own state and what it received.

    Returns the row and the other peers ranked by the strategy's own scores, best first (score-
    softmax strategies: the raw scores, computed once — they may be accounted under DP; others:
    by the row, ties in index order)."""
    peer.collect()
    adapters = {peer.index: peer.adapter(), **peer.inbox.adapters}
    signatures = dict(peer.inbox.signatures)
    if strategy.discovery is Discovery.SIGNATURES:
        signatures[peer.index] = _own_signature(peer, strategy, reference)
    ctx = TrustContext(
        self_index=peer.index,
        peer_ids=peer.peer_ids,
        adapters=adapters,
        signatures=signatures,
        domain_mixes=domain_mixes,
        validation_perplexity=peer.validation_perplexity,
        validation_gap=peer.validation_gap,
    )
    try:
        if isinstance(strategy, ScoreSoftmaxStrategy):
            raw = strategy.scores(ctx).to(torch.float64)
            row = strategy.row_from_scores(raw, peer.index)
        else:
            row = strategy.row(ctx)
            raw = torch.where(row > 0, row, float("-inf"))
    except BudgetExhaustedError as exc:
        # Scoring itself can cost ε (the accounted ``validation`` scores). A peer whose budget
        # cannot pay for its row stops sharing, like a refused release, and keeps its own adapter;
        # scores it already paid for are in its ledger and are simply not used.
        if peer.privacy is None:
            raise
        peer.privacy.stop_sharing(f"trust scores over budget: {exc}")
        row = torch.zeros(len(peer.peer_ids), dtype=torch.float64)
        row[peer.index] = 1.0
        raw = torch.where(row > 0, row, float("-inf"))
    check_row(row, len(peer.peer_ids))
    return row, rank_others(raw, peer.index)


def request(peer: Peer, ask: set[int], first: int | None = None) -> None:
    """Phase 3: ask the peers ``ask`` whose adapter this peer does not hold yet; the request to
    ``first`` (the peer it ranks closest, secure mode) says so (``rank = 1``, for consent)."""
    for j in sorted(ask):
        if j != peer.index and j not in peer.inbox.adapters:
            meta: dict[str, object] | None = {"rank": 1} if j == first else None
            peer.send(j, MessageType.ADAPTER_REQUEST, meta=meta)


def answer(peer: Peer) -> None:
    """Phase 4: send this peer's adapter to each peer that asked for it (a ``DECLINE`` saying
    ``budget`` where the privacy budget refuses the release)."""
    peer.collect()
    for j in sorted(peer.inbox.requests):
        peer.answer_request(j, consent=True)
