"""Whom a peer asks and whom it answers: selection and consent, in one place and one unit.

The unit of every rule here is the *encrypted score* (the decrypted CKKS cosine a peer holds for
each other peer, docs/design.md "Encrypted similarity"), ranked by the one rule of
:mod:`~secure_pcft.collab.ranking`; strategies without discovery select on the support of their
trust row.

* :func:`select_peers` — whom to ask: positive trust, score ≥ ``[security] select_threshold``, the
  ``select_top_k`` best.
* :func:`willing_peers` — whom this peer would send its adapter to under ``mutual`` consent: its
  ``select_top_k`` best-scored peers that answered, whatever the strategy's own row.
* :func:`consented` — requesters that get the adapter: the willing and the asked (``mutual``), those
  plus every requester in the better half of this peer's scores (``reciprocal``), or every peer
  (``asker``).
* :func:`answer_with_consent` — the adapter, or a ``DECLINE`` that says why; the outcome as facts.

Consent (``[security] consent``): ``mutual`` — an adapter only reaches peers its owner ranks among its
``select_top_k`` closest, so a dissimilar peer cannot harvest adapters by asking. A strategy may ask
fewer peers than that (its own ``top_k``); consent still covers the owner's ``select_top_k``, so one
rank of disagreement between two peers does not leave either of them alone.

Mutual top-k strands peers: similarity graphs have *hubs* (peers close to many) and *anti-hubs*. Every
peer asks its k closest, so hubs receive most requests, and a hub that consents only to its own k
closest declines the rest; an anti-hub whose k closest are all hubs averages with nobody (measured
under DP on a one-language setting: 9–30 of 81 peer-rounds alone, one peer alone all run).
``reciprocal`` keeps the owner's judgement but not its quota. A requester also gets the adapter
(a) when the owner scores it in the better half of its peers (at least the median of its own
scores) — a request is the asker's evidence that the owner is among *its* closest (both sides
compute the same cosine), the median the owner's evidence that the asker is closer than its typical
peer, not a dissimilar harvester; and (b) when the request says the owner is the asker's *first
choice* (``rank = 1``): every peer that asks is answered by at least its closest peer, so nobody is
stranded, whatever the hubs' own rankings. An honest asker names one first choice per round; a
dishonest one can claim it to everyone and so harvests like under ``asker`` — the residual risk of
TM-02 (a malicious peer can always lie about its similarity). ``asker`` drops both checks (any
roster peer that asks).

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
    cfg: SecurityConfig,
    selected: set[int],
    willing: set[int],
    num_peers: int,
    *,
    cosines: torch.Tensor | None = None,
    self_index: int = -1,
    first_choice_of: set[int] = frozenset(),  # type: ignore[assignment]
) -> set[int]:
    """Peers a peer may send its adapter to if they ask.

    ``mutual``: the peers it is willing to exchange with and those it asked itself. ``reciprocal``:
    those, plus every peer whose encrypted score ``cosines`` (N,) is at least the median of this
    peer's scores of the others that answered (and at least ``select_threshold`` when set), plus
    the requesters that ranked it first (``first_choice_of``); without scores (strategies without
    discovery) as ``mutual``. ``asker``: every peer of the run.
    """
    if cfg.consent == "asker":
        return set(range(num_peers))
    out = selected | willing
    if cfg.consent == "reciprocal" and cosines is not None:
        out |= better_half(cosines, self_index, cfg.select_threshold) | set(first_choice_of)
    return out


def first_choice(
    cosines: torch.Tensor, selected: set[int], self_index: int, cfg: SecurityConfig
) -> int | None:
    """The selected peer this peer scores highest (ties: lower index), or None."""
    ranked = _ranked(cosines, self_index, cfg, among=sorted(selected))
    return ranked[0] if ranked else None


def better_half(cosines: torch.Tensor, self_index: int, threshold: float | None) -> set[int]:
    """Peers (not self) scored at least the median of the others' known scores (NaN = unknown),
    and at least ``threshold`` when it is set."""
    others = [j for j in range(cosines.shape[0]) if j != self_index and not cosines[j].isnan()]
    if not others:
        return set()
    median = float(torch.stack([cosines[j] for j in others]).median())
    floor = median if threshold is None else max(median, threshold)
    return {j for j in others if float(cosines[j]) >= floor}


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
    """Send this peer's adapter to each requester it consents to; DECLINE the others. The round's
    requests are already in ``peer.inbox`` (the caller read them first: consent depends on them)."""
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
