"""One place that assembles a run: its plan, built once from the config, and its peers.

Both runtimes (the loopback simulation and a Flower site) and the entry points that compare
strategies build what a run needs here, so that a peer, its privacy plan and the strategy it runs
are the same objects whoever drives them:

* :class:`RunPlan` — frozen, built once per (config, number of peers): the strategy object, the
  round's steps, the label that names the run, and the privacy plan its peers are built for
  (accounted private scores per round, candidates of the per-round choice).
* :func:`build_peer` — one peer of a plan: its token blocks, model, trainer, privacy wrapper and
  channel end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from secure_pcft.collab.acceptance import selection_candidates
from secure_pcft.collab.channel import Channel
from secure_pcft.collab.peer import Peer, PeerBlocks, PeerSettings
from secure_pcft.collab.round import round_steps
from secure_pcft.collab.strategy import TrustStrategy, make_strategy, run_scoring_queries
from secure_pcft.config import RunConfig
from secure_pcft.data.blocks import encode_blocks, encode_unit_blocks
from secure_pcft.data.corpus import PeerCorpus
from secure_pcft.model.loading import BaseModel
from secure_pcft.privacy.budget_store import BudgetStore


@dataclass(frozen=True)
class RunPlan:
    """What a run is, decided once before any peer trains.

    Attributes:
        cfg: the run's configuration.
        strategy: the trust strategy object.
        steps: the steps of one round (collab/round.py).
        label: the strategy's label (names result folders and rows; the same in every runtime).
        scoring_queries: accounted private scores per peer per round (``validation``).
        selection_candidates: candidates of the per-round choice (``[strategy] accept``).
    """

    cfg: RunConfig
    strategy: TrustStrategy
    steps: tuple[str, ...]
    label: str
    scoring_queries: int
    selection_candidates: int

    @classmethod
    def of(cls, cfg: RunConfig, num_peers: int) -> RunPlan:
        """The plan of ``cfg`` for ``num_peers`` peers.

        Raises:
            ConfigError: an unknown strategy, or a round it cannot run (collab/round.py).
        """
        strategy = make_strategy(cfg.strategy)
        return cls(
            cfg=cfg,
            strategy=strategy,
            steps=round_steps(cfg),
            label=strategy.label,
            scoring_queries=run_scoring_queries(cfg, num_peers),
            selection_candidates=selection_candidates(
                cfg.strategy, cfg.security.select_top_k, num_peers
            ),
        )

    @property
    def privacy_key(self) -> tuple[int, int]:
        """What the peers' privacy plan depends on: plans with equal keys share a warm-up."""
        return self.scoring_queries, self.selection_candidates


def build_peer(
    plan: RunPlan,
    index: int,
    peer_ids: tuple[str, ...],
    corpus: PeerCorpus,
    base: BaseModel,
    channel: Channel,
    ledger_dir: Path,
    budget_store: BudgetStore | None = None,
) -> Peer:
    """Peer ``index`` of ``plan``: its splits as token blocks (N, T) of ``[data] block_size``;
    with DP and a ``budget_store``, earlier runs on its training data count against its budget."""
    return Peer(
        index,
        peer_ids,
        corpus,
        peer_blocks(plan.cfg, corpus, base),
        base,
        PeerSettings.of(plan.cfg),
        channel,
        ledger_dir=ledger_dir,
        scoring_queries=plan.scoring_queries,
        selection_candidates=plan.selection_candidates,
        budget_store=budget_store if plan.cfg.privacy.enabled else None,
    )


def peer_blocks(cfg: RunConfig, corpus: PeerCorpus, base: BaseModel) -> PeerBlocks:
    """A peer's splits as token blocks of ``[data] block_size``, in its privacy unit.

    ``[privacy] unit = "block"``: each split is one EOS-separated stream cut into full blocks.
    ``document``/``subject``: the training and validation splits are cut per document, every
    block tagged with its unit (its document, or its document's subject); the test split stays a
    stream, so test perplexities compare across units.

    Raises:
        DataError: too little text for a block, or (``subject``) a document naming no subject.
    """
    tok, bs, unit = base.tokenizer, cfg.data.block_size, cfg.privacy.unit
    test = encode_blocks(corpus.test, tok, bs)
    if unit == "block":
        return PeerBlocks(
            encode_blocks(corpus.train, tok, bs), encode_blocks(corpus.val, tok, bs), test
        )

    def tagged(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        docs: tuple[str, ...] = getattr(corpus, split)
        keys = corpus.subjects(split) if unit == "subject" else tuple(map(str, range(len(docs))))
        encoded = encode_unit_blocks(docs, keys, tok, bs)
        return encoded.ids, encoded.units

    (train, train_units), (val, val_units) = tagged("train"), tagged("val")
    return PeerBlocks(train, val, test, train_units=train_units, val_units=val_units)
