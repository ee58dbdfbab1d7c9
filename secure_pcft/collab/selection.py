"""Whom a peer asks and whom it answers: selection and consent, in one place and one unit.

The unit of every rule here is the *encrypted score* (the decrypted CKKS cosine a peer holds for
each other peer, docs/design.md "Encrypted similarity"), ranked by the one rule of
:mod:`~secure_pcft.collab.ranking`; strategies without discovery select on the support of their
trust row.

* :func:`select_peers` — whom to ask: positive trust, score ≥ ``[security] select_threshold``, the
  ``select_top_k`` best.
* :func:`willing_peers` — whom this peer would send its adapter to under ``mutual`` consent: its
  ``select_top_k`` best-scored peers that answered, whatever the strategy's own row.
* :func:`consented` — requesters that get the adapter: the willing and the asked (``mutual``), or
  every peer (``asker``).
* :func:`answer_with_consent` — the adapter, or a ``DECLINE`` that says why; the outcome as facts.

Consent (``[security] consent``, default ``mutual``): an adapter only reaches peers its owner ranks
among its ``select_top_k`` closest, so a dissimilar peer cannot harvest adapters by asking. A
strategy may ask fewer peers than that (its own ``top_k``); consent still covers the owner's
``select_top_k``, so one rank of disagreement between two peers does not leave either of them alone
— measured under DP, where training alone is the worst outcome (README, "Privacy–utility").

Threats mitigated (threat_models/): adapter harvesting by dissimilar peers (TM-02); adapters sent
to everyone reaching a curious peer (TM-01).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from secure_pcft.collab.peer import Peer, SendOutcome
from secure_pcft.collab.ranking import rank_others
from secure_pcft.config import SecurityConfig
from secure_pcft.errors import ConfigError


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
    return set(_ranked(cosines, self_index, cfg, among=candidates))


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
    return set(_ranked(cosines, self_index, cfg))


def _ranked(
    cosines: torch.Tensor, self_index: int, cfg: SecurityConfig, among: list[int] | None = None
) -> list[int]:
    limit = cfg.select_top_k or None  # 0 = every peer
    return rank_others(
        cosines, self_index, limit=limit, threshold=cfg.select_threshold, among=among
    )


def check_top_k_fits(top_k: int, cfg: SecurityConfig) -> None:
    """Refuse a strategy ``top_k`` that encrypted discovery cannot feed: a peer aggregates only the
    adapters it asked for, so ``top_k`` (self + k - 1 others) must not exceed ``select_top_k + 1``.

    Raises:
        ConfigError: it does; the message says what to set.
    """
    asked = cfg.select_top_k
    if asked and top_k > asked + 1:
        raise ConfigError(
            f"[strategy] top_k = {top_k} keeps self and {top_k - 1} other peers, but "
            f"[security] select_top_k = {asked} asks only {asked} for their adapters: "
            f"set top_k <= {asked + 1}, or select_top_k >= {top_k - 1} (0 = ask every peer)"
        )


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


PEER_SET_KEYS = ("selected", "willing")  # per peer: the peers it chose / would send to
EDGE_KEYS = ("adapters_sent", "declined", "refused_budget")  # per peer: the requesters, by outcome
FACT_KEYS = PEER_SET_KEYS + EDGE_KEYS


def round_log(rnd: int, facts: Mapping[str, Mapping[str, Sequence[str]]]) -> dict[str, Any]:
    """The security log of round ``rnd`` from each peer's facts (peer id -> ``FACT_KEYS`` -> peer
    ids; no scores): whom each selected and was willing to send to, and the adapter edges sent,
    declined and refused by the budget, as ``[sender, recipient]`` pairs."""
    log: dict[str, Any] = {"round": rnd}
    for key in PEER_SET_KEYS:
        log[key] = {p: list(f.get(key, [])) for p, f in facts.items()}
    for key in EDGE_KEYS:
        log[key] = [[p, q] for p, f in facts.items() for q in f.get(key, [])]
    return log
