"""A peer's privacy wrapper: DP-SGD trainer, durable ledger and budget gate on every release.

The peer asks :meth:`PeerPrivacy.authorize` before any message derived from its private data
leaves it (adapters, prediction signatures, similarity answers). The DP-SGD steps behind that
release are written and fsync'd to the ledger first; a release that would exceed the budget is
refused, and from then on the peer shares nothing derived from its model (TM-01, TM-05).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from secure_pcft.config import PrivacyConfig, TrainConfig
from secure_pcft.crypto.ledger_heads import HeadStatement, sign_head
from secure_pcft.errors import BudgetExhaustedError, PrivacyError
from secure_pcft.privacy.accounting import epsilon_spent
from secure_pcft.privacy.budget import BudgetGuard, budget_epsilon
from secure_pcft.privacy.budget_store import BudgetStore
from secure_pcft.privacy.dp_trainer import DpTrainer
from secure_pcft.privacy.events import DpEvent
from secure_pcft.privacy.ledger import PrivacyLedger, ledger_path
from secure_pcft.privacy.validation_scores import (
    noise_source,
    noisy_validation_gaps,
    noisy_validation_scores,
)

log = logging.getLogger(__name__)


class PeerPrivacy:
    """DP-SGD training and release accounting for one peer.

    Args:
        peer_id: the peer's id (names its ledger).
        model: the peer's LoRA model (Opacus hooks are attached to it).
        train_blocks: private training blocks (N, T).
        privacy: the run's ``[privacy]`` section.
        train: the run's ``[train]`` section (its step schedule is what the plan accounts).
        generator: the peer's sampling generator.
        ledger_dir: directory of the per-peer ledgers.
        scoring_queries: accounted private scores planned per round (the ``validation``
            strategy's; :func:`~secure_pcft.collab.strategy.planned_scoring_queries`). They are
            reserved before σ is calibrated, so DP-SGD and the scores together meet the target.
        selection: the per-round choice's planned events (:mod:`secure_pcft.privacy.selection`),
            reserved the same way.
        budget: the site's budget store and this peer's key in it (privacy/budget_store.py), or
            None (experiments that compare alternatives): earlier runs' events on the same data
            are reserved in the calibration and counted by the guard; every ledger opened here is
            registered.
        units: the privacy unit of each training block (``[privacy] unit`` document/subject;
            None for blocks), passed to the DP-SGD trainer.

    Attributes:
        scoring_queries: the plan's scores per round (a run may only use a strategy with this plan).
    """

    def __init__(
        self,
        peer_id: str,
        model: nn.Module,
        train_blocks: torch.Tensor,
        privacy: PrivacyConfig,
        train: TrainConfig,
        generator: torch.Generator,
        ledger_dir: Path,
        scoring_queries: int,
        selection: Sequence[DpEvent] = (),
        budget: tuple[BudgetStore, str] | None = None,
        units: torch.Tensor | None = None,
    ) -> None:
        self.peer_id = peer_id
        self.privacy_cfg = pc = privacy
        self.train_cfg = train
        self.scoring_queries = scoring_queries
        self.store = budget
        self.prior: list[DpEvent] = []
        self.prior_ledgers: list[str] = []
        if budget is not None:
            store, key = budget
            own = ledger_path(ledger_dir, peer_id)
            self.prior, self.prior_ledgers = store.prior_events(key, own, privacy.unit)
        reserved = [
            DpEvent("gaussian-validation", pc.validation_noise_multiplier, 1.0, scoring_queries, r,
                    "validation-scores")
            for r in range(1, train.num_rounds + 1)
            if scoring_queries
        ] + list(selection)  # fmt: skip
        # earlier runs on the same data count too: σ is calibrated with them reserved
        self.trainer = DpTrainer(
            model, train_blocks, train, pc, generator, reserved=[*self.prior, *reserved],
            units=units,
        )  # fmt: skip
        self.planned_epsilon = epsilon_spent(
            [self.trainer.planned_event(), *reserved], self.trainer.delta, pc.accountant
        )
        self.budget = budget_epsilon(pc, self.planned_epsilon)
        self.round = 0
        self.declared: tuple[str, frozenset[str]] = ("none yet", frozenset())
        self.stopped_round: int | None = None
        self._validation_generator = torch.Generator().manual_seed(generator.initial_seed() + 1)
        # the per-round choice's noise (privacy/selection.py): the OS CSPRNG with secure_rng
        self.selection_source = noise_source(
            pc, torch.Generator().manual_seed(generator.initial_seed() + 2)
        )
        self.ledger: PrivacyLedger | None = None
        self.open_ledger(ledger_dir)

    def open_ledger(self, ledger_dir: Path) -> None:
        """(Re)open this peer's ledger in ``ledger_dir`` (a fresh directory = a fresh run)."""
        pc = self.privacy_cfg
        if self.ledger is not None:
            self.ledger.close()
        self.ledger = ledger = PrivacyLedger.open(
            ledger_path(ledger_dir, self.peer_id),
            peer_id=self.peer_id,
            delta=self.trainer.delta,
            budget_epsilon=self.budget,
            accountant=pc.accountant,
            unit=self.trainer.unit,
        )
        if self.store is not None:
            store, key = self.store
            store.register(key, ledger.path, run=str(ledger_dir))
            self.prior, self.prior_ledgers = store.prior_events(key, ledger.path, pc.unit)
        self.guard = BudgetGuard(
            ledger, self.budget, self.trainer.delta, pc.accountant, prior=self.prior
        )
        first = self.train_cfg.warmup_steps + self.train_cfg.local_steps
        self.guard.preflight(
            [
                DpEvent(
                    "dp-sgd",
                    self.trainer.noise_multiplier,
                    self.trainer.sample_rate,
                    first,
                    0,
                    "adapter",
                )
            ]
        )
        self.stopped_round = None

    @property
    def sharing(self) -> bool:
        return self.stopped_round is None

    def declare_releases(self, strategy: str, types: Iterable[str]) -> None:
        """What the running ``strategy`` may release from now on (``TrustStrategy.releases``)."""
        self.declared = (strategy, frozenset(map(str, types)))

    def authorize(self, msg_type: str, recipient: str, *, release: bool) -> bool:
        """Record the release in the ledger (fsync'd) and say whether it may leave.

        A message that is no release (``release`` False: requests, declines, HE contexts and
        queries) always may.

        Raises:
            PrivacyError: a release the running strategy did not declare
                (:meth:`declare_releases`; none is declared before the first round), refused so
                that nothing leaves that its plan did not foresee.
        """
        if not release:
            return True
        strategy, declared = self.declared
        if msg_type not in declared:
            raise PrivacyError(
                f"{self.peer_id}: strategy {strategy!r} does not declare releasing {msg_type!r} "
                f"(it declares {', '.join(sorted(declared)) or 'nothing'}; "
                "TrustStrategy.releases): refused, so nothing leaves unaccounted"
            )
        if not self.sharing:
            return False
        try:
            self.guard.record_training_release(
                self.trainer, round=self.round, released=msg_type, recipients=(recipient,)
            )
        except BudgetExhaustedError as exc:
            self.stop_sharing(str(exc))
            return False
        return True

    def stop_sharing(self, reason: str) -> None:
        """Stop releasing from now on (idempotent); the first stop's round is kept."""
        if self.stopped_round is None:
            self.stopped_round = self.round
            log.warning("%s stops sharing at round %d: %s", self.peer_id, self.round, reason)

    def noisy_validation_perplexity(self, losses: torch.Tensor) -> float:
        """Accounted validation score of an adapter from its exact validation ``losses`` (n,),
        one per privacy unit (the loss of a block, or the mean over a document's or subject's).

        Raises:
            BudgetExhaustedError: the score's ε would exceed the budget (nothing recorded).
        """
        noisy = noisy_validation_scores(
            {0: losses}, self.privacy_cfg, round=self.round, generator=self._validation_generator
        )
        self.guard.record_release([noisy.event])
        return float(noisy.perplexities[0])

    def noisy_validation_gap(self, losses: torch.Tensor, own_losses: torch.Tensor) -> float:
        """Accounted mean loss gap (nats) of an adapter to the own adapter, from both adapters'
        exact validation losses per privacy unit (n,) each.

        Raises:
            BudgetExhaustedError: the score's ε would exceed the budget (nothing recorded).
        """
        noisy = noisy_validation_gaps(
            {0: losses},
            own_losses,
            self.privacy_cfg,
            round=self.round,
            generator=self._validation_generator,
        )
        self.guard.record_release([noisy.event])
        return float(noisy.losses[0])

    def signed_head(self, sign: Callable[[bytes], bytes]) -> dict[str, object]:
        """This peer's ledger head (records, last hash, running ε) as a signed statement
        (crypto/ledger_heads.py) — sent with every released adapter in secure mode."""
        ledger = self.guard.ledger
        head = ledger.head
        eps = epsilon_spent(ledger.events, self.trainer.delta, self.privacy_cfg.accountant)
        return sign_head(HeadStatement(self.peer_id, head.count, head.hash, self.round, eps), sign)

    def record_selection(self, event: DpEvent) -> bool:
        """Record the per-round choice's event before the choice is used; False (and the peer
        stops sharing) when the budget refuses it — the choice must then not be used."""
        try:
            self.guard.record_release([event])
        except BudgetExhaustedError as exc:
            self.stop_sharing(f"selection scores over budget: {exc}")
            return False
        return True

    def summary(self) -> dict[str, object]:
        """Ledger summary for results and reports (ε recomputed from the ledger)."""
        events = list(self.guard.ledger.events)
        delta, acc = self.trainer.delta, self.privacy_cfg.accountant
        return {
            "epsilon_spent": epsilon_spent(events, delta, acc),
            "epsilon_prior": epsilon_spent(self.prior, delta, acc),  # earlier runs, same data
            "epsilon_total": epsilon_spent([*self.prior, *events], delta, acc),
            "prior_ledgers": list(self.prior_ledgers),
            "budget_epsilon": self.budget,
            "delta": self.trainer.delta,
            "noise_multiplier": self.trainer.noise_multiplier,
            "sample_rate": self.trainer.sample_rate,
            "train_blocks": int(self.trainer.blocks.shape[0]),
            "unit": self.trainer.unit,
            "train_units": self.trainer.num_units,
            "accountant": self.privacy_cfg.accountant,
            "events": len(events),
            "stopped_sharing_round": self.stopped_round,
            "ledger": str(self.guard.ledger.path),
        }

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None
