"""One-machine simulation of a collaboration: N peers on a loopback transport.

Every message goes through the real message layer (and, with security on, the real envelopes), so
byte counts and rejections are those a deployment would see.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import torch

from secure_pcft.collab.acceptance import kept_figures
from secure_pcft.collab.channel import Channel, PlainChannel
from secure_pcft.collab.keep_best import KeptModel
from secure_pcft.collab.results import RoundRecord, RunResult, outcome_lists
from secure_pcft.collab.round import PeerRound, drive_round, reference_batch
from secure_pcft.collab.secure_session import SecureSession
from secure_pcft.collab.selection import round_log
from secure_pcft.collab.strategy import TrustStrategy, make_strategy
from secure_pcft.config import RunConfig, StrategyConfig
from secure_pcft.data.blocks import encode_blocks
from secure_pcft.data.corpus import Federation
from secure_pcft.errors import ConfigError
from secure_pcft.model.loading import BaseModel
from secure_pcft.privacy.budget_store import BudgetStore
from secure_pcft.runtime.assembly import RunPlan, build_peer
from secure_pcft.transport.base import StagedTransport
from secure_pcft.transport.loopback import LoopbackTransport
from secure_pcft.transport.meter import TrafficMeter

log = logging.getLogger(__name__)


class ProgressFn(Protocol):
    """Progress callback: stage name, done, total, and a short note (e.g. ε spent per peer)."""

    def __call__(self, stage: str, done: int, total: int, note: str = "") -> None: ...


@dataclass
class Snapshot:
    """Local state of every peer at one point (for branching strategies off one warm-up)."""

    adapters: list[dict[str, torch.Tensor]]
    kept: list[KeptModel]  # each peer's starting point and best model seen
    trainers: list[dict[str, Any]]
    rng: list[tuple[torch.Tensor, torch.Tensor | None]]  # each peer's dropout streams
    record: RoundRecord
    first_round_trained: bool = (
        False  # round 1's local steps are in it (see Simulation.branch_point)
    )


class Simulation:
    """Builds the peers of a run and drives warm-up and rounds on one machine.

    ``budget_store``: the site budget store a real run draws from (``secure-pcft run``); None
    for experiments that compare alternatives from one warm-up (each branch its own ledgers).
    """

    def __init__(
        self,
        cfg: RunConfig,
        federation: Federation,
        base: BaseModel,
        budget_store: BudgetStore | None = None,
    ) -> None:
        self.cfg = cfg
        self.federation = federation
        self.base = base
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.peer_ids = federation.peer_ids
        # Staged: what a round's step sends is delivered after every peer ran it (a relay's barrier).
        self.transport: StagedTransport = LoopbackTransport(self.peer_ids, staged=True)
        self.meter = TrafficMeter()  # every peer's channel counts what it sends here
        # [security] mode = "full": sealed envelopes, encrypted discovery, consent (secure_session.py)
        self.security = (
            SecureSession(cfg.security, self.peer_ids, meter=self.meter)
            if cfg.security.mode == "full"
            else None
        )
        # The peers' privacy plan is that of cfg.strategy: only strategies with the same plan may
        # run on these peers (check_privacy_plan); σ was calibrated with its scores reserved.
        self.plan = RunPlan.of(cfg, len(self.peer_ids))
        self.reference = encode_blocks(federation.reference, base.tokenizer, cfg.data.block_size)
        ledgers = Path(cfg.privacy.ledger_dir or Path(cfg.output.dir) / "ledgers")
        self.peers = [
            build_peer(self.plan, i, self.peer_ids, corpus, base, self._channel(corpus.peer_id),
                       ledgers, budget_store)
            for i, corpus in enumerate(federation.peers)
        ]  # fmt: skip
        self.domain_mixes = tuple(dict(c.domain_mix) for c in federation.peers)
        self.records: list[RoundRecord] = []
        self._outcomes: list[dict[str, object]] = []

    def _channel(self, peer_id: str) -> Channel:
        if self.security is not None:
            return self.security.make_channel(peer_id, self.transport)
        # the same message-size limit as a Flower site's channel and the secure envelope's
        limit = self.cfg.security.max_message_bytes
        return PlainChannel(peer_id, self.transport, limit, meter=self.meter)

    # ---- phases ----------------------------------------------------------------------------
    def _evaluate(
        self,
        rnd: int,
        trust: torch.Tensor | None,
        *,
        scored: bool = True,
        progress: ProgressFn | None = None,
    ) -> RoundRecord:
        """The round's record; test splits scored unless ``scored`` is off (empty score lists)."""
        scores = []
        if scored:
            stage = f"test scores (round {rnd})"
            for i, p in enumerate(self.peers):
                if progress:
                    progress(stage, i, len(self.peers))
                scores.append(p.evaluate("test"))
            if progress:
                progress(stage, len(self.peers), len(self.peers))
        return RoundRecord(
            round=rnd,
            step=self.peers[0].trainer.steps_done,
            test_ppl=[s.perplexity for s in scores],
            test_acc=[s.accuracy for s in scores],
            trust=[] if trust is None else trust.tolist(),
            bytes_sent=[self.meter.sent(rnd, p).bytes for p in self.peer_ids],
            messages_sent=[self.meter.sent(rnd, p).messages for p in self.peer_ids],
        )

    def warmup(self, progress: ProgressFn | None = None) -> RoundRecord:
        """Purely local steps before the first aggregation; records round 0."""
        steps = self.cfg.train.warmup_steps

        if progress:
            progress("warm-up", 0, len(self.peers))
        for i, p in enumerate(self.peers):
            p.train(steps)  # from the peer's own dropout stream
            p.begin_keeping()  # the starting point of the model it keeps (base or warm-up)
            if progress:
                progress("warm-up", i + 1, len(self.peers))
        self.meter.begin_round(0)
        record = self._evaluate(0, None, progress=progress)
        self.records = [record]
        return record

    def local_phase(self) -> None:
        """Every peer's local steps of the next round (the part before its aggregation)."""

        for p in self.peers:
            p.train(self.cfg.train.local_steps)

    def aggregation_phase(self, strategy: TrustStrategy, rnd: int) -> torch.Tensor:
        """One aggregation round over the message layer (the steps of :mod:`.round`, every peer
        in turn, delivered between steps); returns the applied trust matrix."""
        sec = self.security
        rounds = [
            PeerRound(p, strategy, self.domain_mixes, sec.secure_peer(p.peer_id) if sec else None)
            for p in self.peers
        ]
        reference = reference_batch(self.reference, strategy, self.cfg, rnd)
        trust = drive_round(rounds, rnd, reference, self.transport.deliver)
        if sec is not None:
            sec.history.append(round_log(rnd, {r.peer.peer_id: r.facts() for r in rounds}))
        self._outcomes = [r.outcome() for r in rounds]
        return trust

    def round(
        self,
        strategy: TrustStrategy,
        rnd: int,
        *,
        trained: bool = False,
        evaluate: bool = True,
        progress: ProgressFn | None = None,
    ) -> RoundRecord:
        """Local steps for every peer (unless ``trained``: done already), then one aggregation.

        With ``evaluate`` off the record carries no test scores (``test_ppl``/``test_acc`` empty):
        for callers that only need the final round scored.
        """
        if not trained:
            self.local_phase()
        trust = self.aggregation_phase(strategy, rnd)
        record = self._evaluate(rnd, trust, scored=evaluate, progress=progress)
        record.extra.update(outcome_lists(self._outcomes))
        self.records.append(record)
        return record

    def branch_point(self, progress: ProgressFn | None = None) -> Snapshot:
        """Warm-up, then round 1's local steps, then a snapshot that strategies branch off.

        Neither part depends on the strategy, so they run once; a strategy restored from here and
        run with ``run_rounds(..., first_trained=snap.first_round_trained)`` ends exactly where a
        run of it alone would (tests/integration/test_simulation.py).
        """
        self.warmup(progress)
        trained = self.cfg.train.num_rounds >= 1
        if trained:
            self.local_phase()
        snap = self.snapshot()
        snap.first_round_trained = trained
        return snap

    def run_branch(
        self,
        warm: Snapshot,
        scfg: StrategyConfig,
        *,
        ledger_dir: Path | None = None,
        progress: ProgressFn | None = None,
        evaluate_every_round: bool | None = None,
    ) -> TrustStrategy:
        """Run the strategy ``scfg`` from ``warm`` (a :meth:`branch_point`): the one way every
        "many strategies from one warm-up" caller (``compare_strategies``, the benchmarks) runs a
        branch. ``ledger_dir``: where this branch's releases are recorded (each branch is its own
        hypothetical run, with ledgers of its own). Returns the strategy object it ran."""
        self.restore(warm)
        self.cfg = replace(self.cfg, strategy=scfg)
        if ledger_dir is not None:
            for p in self.peers:
                if p.privacy is not None:
                    p.privacy.open_ledger(ledger_dir)
        strategy = make_strategy(scfg)
        self.run_rounds(strategy, progress, first_trained=warm.first_round_trained,
                        evaluate_every_round=evaluate_every_round)  # fmt: skip
        return strategy

    def snapshot(self) -> Snapshot:
        return Snapshot(
            adapters=[p.adapter() for p in self.peers],
            kept=[copy.deepcopy(p.kept) for p in self.peers],
            trainers=[copy.deepcopy(p.trainer.state_dict()) for p in self.peers],
            rng=[p.rng_snapshot() for p in self.peers],
            record=copy.deepcopy(self.records[-1]),
        )

    def restore(self, snap: Snapshot) -> None:
        for p, a, t, k in zip(self.peers, snap.adapters, snap.trainers, snap.kept, strict=True):
            p.set_adapter(a)
            p.trainer.load_state_dict(copy.deepcopy(t))
            p.kept = copy.deepcopy(k)
        for p, rng in zip(self.peers, snap.rng, strict=True):
            p.restore_rng(rng)
        self.records = [copy.deepcopy(snap.record)]
        self.transport.reset()
        self.meter.reset()
        if self.security:
            self.security.reset()
        for p in self.peers:
            p.channel.rejections.clear()
            p.receipts.clear()

    def run_rounds(
        self,
        strategy: TrustStrategy,
        progress: ProgressFn | None = None,
        *,
        first_trained: bool = False,
        evaluate_every_round: bool | None = None,
    ) -> None:
        """All aggregation rounds of the schedule.

        Args:
            first_trained: the first round's local steps were already taken (``local_phase``
                before a snapshot that several strategies branch off: those steps do not depend
                on the strategy).
            evaluate_every_round: score the test splits after every round (True) or only after
                the last (False); None follows ``[train] eval_every``.
        """
        self.check_privacy_plan(strategy)
        n = self.cfg.train.num_rounds
        if progress:  # opens the bar, so the first round's time shows too
            progress(f"rounds ({strategy.label})", 0, n, self.privacy_status())
        every = self.cfg.train.eval_every
        for r in range(1, n + 1):
            scheduled = r % every == 0 if evaluate_every_round is None else evaluate_every_round
            self.round(
                strategy,
                r,
                trained=first_trained and r == 1,
                evaluate=scheduled or r == n,
                progress=progress,
            )
            if progress:
                progress(f"rounds ({strategy.label})", r, n, self.privacy_status())

    def check_privacy_plan(self, strategy: TrustStrategy) -> None:
        """Refuse a strategy whose private scoring the peers' privacy plan did not reserve.

        With DP on, σ is calibrated when the peers are built, for ``cfg.strategy``'s planned
        releases; a strategy that scores more (or fewer) candidates on private data would run on
        the wrong plan (its scores then hit the budget, or σ is larger than needed).

        Raises:
            ConfigError: DP is on and ``strategy``'s planned private scores differ from the plan.
        """
        if not self.cfg.privacy.enabled:
            return
        wanted = RunPlan.of(replace(self.cfg, strategy=strategy.cfg), len(self.peer_ids))
        if wanted.privacy_key != self.plan.privacy_key:
            raise ConfigError(
                f"[strategy] {wanted.label!r} needs the privacy plan (accounted scores, choice "
                f"candidates per round) {wanted.privacy_key}, but these peers' plan reserved "
                f"{self.plan.privacy_key}: build the simulation with this strategy in "
                "cfg.strategy (compare_strategies groups by plan)"
            )

    def kept_report(self) -> list[dict[str, Any]]:
        """Per peer: the kept model's and the starting point's figures (test scored here, once)."""
        return [kept_figures(p) for p in self.peers]

    def result(self, strategy: TrustStrategy, seconds: float) -> RunResult:
        return RunResult.assemble(
            self.cfg,
            label=strategy.label,
            peer_ids=self.peer_ids,
            base_model=str(self.base.path),
            data=self.federation.description,
            rounds=self.records,
            rejections={p.peer_id: [r.__dict__ for r in p.channel.rejections] for p in self.peers},
            kept=self.kept_report(),
            seconds=seconds,
            started_at=self.started_at,
            privacy={p.peer_id: p.privacy.summary() for p in self.peers if p.privacy},
            receipts={p.peer_id: list(p.receipts) for p in self.peers},
            security=self.security.report() if self.security else None,
        )

    def privacy_status(self) -> str:
        """One line of ε spent per peer (for progress displays); empty without DP."""
        parts = [
            f"{p.peer_id}: ε={p.privacy.summary()['epsilon_spent']:.2f}"
            for p in self.peers
            if p.privacy is not None
        ]
        return ", ".join(parts)

    def close(self) -> None:
        """Release ledger locks and Opacus hooks."""
        for p in self.peers:
            if p.privacy is not None:
                p.privacy.close()
