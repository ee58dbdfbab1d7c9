"""What a peer adopts each round: the candidate its own validation data supports.

A trust rule computes a row of weights from *other* signals (signatures, weight cosines, known
domain mixes); on data, a base and partners it was not tuned on, that row can average a peer into a
worse model than its own, and a partner that sends a sign-flipped or scaled adapter poisons every
aggregate that includes it. With ``[strategy] accept = true`` a peer therefore scores a few
candidates on its private validation split and adopts the best:

* ``self``      — its own adapter after the round's local steps (no aggregation);
* ``trust``     — the strategy's aggregate (its row over the adapters that arrived);
* ``nearest-k`` — the equal average of its own adapter and the k peers it ranks closest among those
  that arrived, for every k up to all it holds (ranked by the strategy's own similarity: the
  decrypted cosines in secure mode, the strategy's scores in plain mode).

The nested ``nearest-k`` make the *breadth* of the average the site's choice: how many partners pay
off depends on how alike they are and on how much noise their adapters carry (DP noise shrinks with
every adapter averaged in; a partner of another language adds bias), which no fixed ``top_k``
captures — the default's top-3 includes one foreign-language peer in a consortium of two peers per
language, and is exactly the language group in one of three.

Without DP the scores are exact mean validation losses. With DP the choice is an accounted
report-noisy-min over loss gaps, planned up front, or skipped when its noise could not tell even a
poisoned candidate from ``self`` (:mod:`secure_pcft.privacy.selection`); skipped, the peer adopts
``trust``, as without acceptance. Whatever is adopted, every scored candidate is also offered to the
peer's kept model (:mod:`secure_pcft.collab.keep_best`), with exact scores that never leave it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from secure_pcft.collab.aggregation import weighted_average
from secure_pcft.collab.keep_best import Seen
from secure_pcft.config import StrategyConfig
from secure_pcft.model.lora import AdapterState
from secure_pcft.privacy.selection import SELF, Choice, exact_choice, noisy_choice

if TYPE_CHECKING:
    from secure_pcft.collab.peer import Peer

TRUST = "trust"
NEAREST = "nearest-{k}"


def candidate_rows(
    row: torch.Tensor, held: set[int], self_index: int, ranking: list[int]
) -> dict[str, torch.Tensor]:
    """The weight rows (N,) of the candidates, over the adapters ``held`` (self included).

    ``trust`` is ``row`` renormalised over ``held``; ``nearest-k`` spreads equally over self and
    the first k peers of ``ranking`` (best first) that are held; peers held but unranked come
    last, in index order. A candidate whose row equals an earlier one is left out (scored once,
    as that one).
    """
    n = row.shape[0]
    own = torch.zeros(n, dtype=torch.float64)
    own[self_index] = 1.0
    trust = torch.zeros(n, dtype=torch.float64)
    for j in held:
        trust[j] = float(row[j])
    trust = trust / trust.sum() if float(trust.sum()) > 0 else own
    others = [j for j in ranking if j in held and j != self_index]
    others += sorted(j for j in held if j != self_index and j not in others)
    rows = [(TRUST, trust)]
    for k in range(1, len(others) + 1):
        r = torch.zeros(n, dtype=torch.float64)
        for j in [self_index, *others[:k]]:
            r[j] = 1.0 / (k + 1)
        rows.append((NEAREST.format(k=k), r))
    out: dict[str, torch.Tensor] = {SELF: own}
    for name, r in rows:
        if not any(torch.allclose(r, prev, atol=1e-12) for prev in out.values()):
            out[name] = r
    return out


@dataclass
class Scored:
    """The candidates of one round: their rows, adapters and exact per-block validation losses."""

    rows: dict[str, torch.Tensor]
    states: dict[str, AdapterState]
    losses: dict[str, torch.Tensor]
    choice: Choice | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def chosen(self) -> str:
        return self.choice.chosen if self.choice is not None else TRUST


def build_candidates(
    rows: Mapping[str, torch.Tensor], held_states: Mapping[int, AdapterState]
) -> dict[str, AdapterState]:
    """Each candidate's adapter: its row's weighted average of the held adapters."""
    return {name: weighted_average(held_states, r) for name, r in rows.items()}


def adopt(
    peer: Peer, row: torch.Tensor, rnd: int, *, accept: bool, ranking: list[int]
) -> tuple[torch.Tensor, Scored]:
    """Aggregate step of a round: build the candidates over the adapters that arrived, score them
    on the validation split, adopt one, and offer each to the kept model.

    Peers that were trusted but never delivered (dropped out, rejected, declined) lose their
    weight; ``trust`` is the row renormalised over the rest. Without ``accept`` the peer adopts
    ``trust`` (the paper's aggregation) and scores only it and ``self``, for the kept model.

    Returns:
        the adopted candidate's row (N,) (the applied trust row) and the scored candidates.
    """
    peer.collect()
    held = {peer.index: peer.adapter(), **peer.inbox.adapters}
    rows = candidate_rows(row, set(held), peer.index, ranking)
    if not accept:
        rows = {k: v for k, v in rows.items() if k in (SELF, TRUST)}
    adapters = build_candidates(rows, held)
    scored = Scored(rows, adapters, {k: peer.val_losses(a) for k, a in adapters.items()})
    if accept:
        scored.choice = _choose(peer, scored, rnd)
    name = scored.chosen if scored.chosen in rows else SELF  # trust == self: nothing arrived
    peer.set_adapter(adapters[name])
    for k, state in adapters.items():
        peer.kept.offer(Seen(state, scored.losses[k], f"round {rnd}: {k}", rnd))
    return rows[name], scored


def breadth(row: torch.Tensor) -> float:
    """The effective number of adapters a row averages, 1 / Σ w² (1 for ``self``)."""
    return float(1.0 / (row.double() ** 2).sum())


def _choose(peer: Peer, scored: Scored, rnd: int) -> Choice:
    plan = peer.selection
    widths = {k: breadth(r) for k, r in scored.rows.items()}
    if peer.privacy is None:
        return exact_choice(scored.losses, widths)
    if not plan.accounted:
        return Choice(TRUST, {}, None)  # skipped: uninformative under this plan (no ε spent)
    source = peer.privacy.selection_source
    choice = noisy_choice(scored.losses, plan, source, round=rnd, breadth=widths)
    if choice.event is not None and not peer.privacy.record_selection(choice.event):
        scored.notes.append("selection over budget: the trust aggregate is adopted")
        return Choice(TRUST, {}, None)
    return choice


def selection_candidates(cfg: StrategyConfig, select_top_k: int, num_peers: int) -> int:
    """The most candidates a peer's per-round choice scores under ``cfg`` (1 = no choice): self,
    trust and one ``nearest-k`` per peer it may hold (``select_top_k`` of them; 0 = every other
    peer). What its privacy plan reserves (privacy/selection.py)."""
    if not cfg.accept:
        return 1
    held = min(select_top_k, num_peers - 1) if select_top_k else num_peers - 1
    return 2 + held


def kept_figures(peer: Peer) -> dict[str, object]:
    """The kept model of ``peer`` against its starting point and the base, on its test split
    (scored here, at the end of a run: test splits never choose anything)."""
    kept, start, base = peer.kept.kept, peer.kept.start, peer.kept.base
    assert start is not None and base is not None
    scores = {"kept": peer.evaluate_state(kept.state)}
    scores["start"] = scores["kept"] if start is kept else peer.evaluate_state(start.state)
    scores["base"] = scores["start"] if base is start else peer.evaluate_state(base.state)
    return {
        **kept.to_json(),
        "test_ppl": scores["kept"].perplexity,
        "test_acc": scores["kept"].accuracy,
        "start": {**start.to_json(), "test_ppl": scores["start"].perplexity},
        "base_test_ppl": scores["base"].perplexity,
    }
