"""The one ranking rule behind every top-k and threshold of a round.

A peer keeps the other peers whose score is known (not NaN) and at least the threshold, best
first, ties broken by peer index, and takes the first ``limit`` of them. Two decisions use it, each
on its own scores:

* aggregation (``[strategy] top_k`` / ``threshold``, :func:`~secure_pcft.collab.strategy.
  select_and_softmax`): the strategy's scores; ``top_k = k`` keeps self and the ``k - 1`` best
  others;
* discovery and consent (``[security] select_top_k`` / ``select_threshold``,
  :mod:`~secure_pcft.collab.selection`): the decrypted CKKS cosines; ``select_top_k = k`` asks
  (and consents to) the ``k`` best others.

In secure mode a strategy aggregates only over the adapters its peer asked for, so a strategy
``top_k`` above ``select_top_k + 1`` is refused before a run starts
(:func:`~secure_pcft.collab.selection.check_top_k_fits`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def rank_others(
    scores: torch.Tensor,
    self_index: int,
    *,
    limit: int | None = None,
    threshold: float | None = None,
    among: Iterable[int] | None = None,
) -> list[int]:
    """Indices of the best-scored other peers, best first.

    Args:
        scores: one score per peer, shape (N,); NaN = unknown (never ranked).
        self_index: this peer (never ranked).
        limit: keep at most this many; None = all.
        threshold: drop peers scoring below it; None = off.
        among: rank only these peers; None = every peer.
    """
    pool = range(scores.shape[0]) if among is None else among
    ranked = [j for j in pool if j != self_index and not bool(torch.isnan(scores[j]))]
    if threshold is not None:
        ranked = [j for j in ranked if float(scores[j]) >= threshold]
    ranked.sort(key=lambda j: (-float(scores[j]), j))
    return ranked if limit is None else ranked[:limit]
