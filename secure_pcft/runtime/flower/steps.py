"""A peer driven step by step by the relay, on the peer's own machine.

The steps of a round are those of :mod:`secure_pcft.collab.round` — the same
:class:`~secure_pcft.collab.round.PeerRound` the loopback simulation drives. Here the relay runs one
step on every peer, collects the envelopes they send, and delivers them with the next step. What
this module adds is the site's part: the warm-up step, the local training at the start of
``discover``, resending the CKKS context to peers whose process restarted, the order check, and
the public report of each step (metrics, byte counts, ε spent, the round's security facts).
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import torch

from secure_pcft.collab.acceptance import kept_figures
from secure_pcft.collab.peer import Peer
from secure_pcft.collab.round import PeerRound, SecurePeer, reference_batch, round_steps
from secure_pcft.collab.strategy import TrustStrategy
from secure_pcft.runtime.assembly import RunPlan
from secure_pcft.runtime.flower.errors import RelayRecordError
from secure_pcft.transport.meter import SESSION_SETUP

log = logging.getLogger(__name__)

WARMUP = "warmup"

__all__ = ["WARMUP", "PeerSession", "round_steps"]


class PeerSession:
    """A peer driven step by step by a relay.

    Args:
        peer: the peer (its channel writes to the relay mailbox and counts in its meter).
        plan: the run's plan (runtime/assembly.py: the strategy, the round's steps, the config).
        reference: public reference blocks (R, T).
        domain_mixes: per peer of the run, its known domain mix (empty dicts when unknown).
        secure: secure-mode parts, or None in plain mode.
    """

    def __init__(
        self,
        peer: Peer,
        plan: RunPlan,
        reference: torch.Tensor,
        domain_mixes: tuple[dict[str, float], ...],
        secure: SecurePeer | None,
    ) -> None:
        self.peer = peer
        self.cfg = plan.cfg
        self.meter = peer.channel.meter
        self.reference = reference
        self.domain_mixes = domain_mixes
        self.secure = secure
        self.strategy: TrustStrategy = plan.strategy
        self.schedule = plan.steps
        self.current: PeerRound | None = None
        self.epoch = secrets.token_hex(8)  # changes when the peer's process restarts
        self._rejections_reported = 0
        self._receipts_reported = 0

    # ---- step dispatch -------------------------------------------------------------------------
    def check_order(self, step: str, rnd: int) -> None:
        """Refuse a step that does not follow this peer's progress through the round.

        Raises:
            RelayRecordError: unknown step, or a step of a round this peer has not begun.
        """
        if step == WARMUP:
            return
        if step not in self.schedule:
            raise RelayRecordError(f"unknown step {step!r}")
        i = self.schedule.index(step)
        if i == 0:
            return
        r = self.current
        if r is None or r.round != rnd or r.done != list(self.schedule[:i]):
            raise RelayRecordError(f"step {step!r} of round {rnd} before the steps preceding it")

    def run(self, step: str, rnd: int, info: dict[str, Any]) -> dict[str, Any]:
        """Run one step (warm-up, or a step of :mod:`secure_pcft.collab.round`); returns its
        public report."""
        self.check_order(step, rnd)
        report: dict[str, Any] = {}
        if step == WARMUP:
            report = self._warmup()
        else:
            if step == self.schedule[0]:
                self._begin(rnd, info)
            assert self.current is not None
            self.current.run(step)
            if step == self.schedule[-1]:
                report = self._round_report(rnd)
        new = self.peer.channel.rejections[self._rejections_reported :]
        self._rejections_reported += len(new)
        report["rejections"] = [r.__dict__ for r in new]
        return report

    # ---- the site's part -----------------------------------------------------------------------
    def _warmup(self) -> dict[str, Any]:
        self.peer.train(self.cfg.train.warmup_steps)
        self.peer.begin_keeping()  # the kept model's starting point (base or warm-up)
        self.meter.begin_round(0)
        return self._evaluation()

    def _begin(self, rnd: int, info: dict[str, Any]) -> None:
        if self.secure is not None:
            for other in info.get("restarted", []):  # their new process needs our context again
                if isinstance(other, str):
                    self.secure.agent.contexts_sent.discard(other)
        self.peer.train(self.cfg.train.local_steps)
        self.current = PeerRound(self.peer, self.strategy, self.domain_mixes, self.secure)
        self.current.begin(rnd, reference_batch(self.reference, self.strategy, self.cfg, rnd))

    def _round_report(self, rnd: int) -> dict[str, Any]:
        r = self.current
        assert r is not None and r.applied is not None
        report = self._evaluation()
        report["trust"] = [float(x) for x in r.applied.tolist()]
        sent, setup = self.meter.sent(rnd), self.meter.sent(SESSION_SETUP)
        report["bytes_sent"] = sent.bytes
        report["messages_sent"] = sent.messages
        report["setup_bytes"] = setup.bytes
        report["setup_messages"] = setup.messages
        if self.secure is not None:
            report.update(r.facts())
        report.update(r.outcome())
        report["receipts"] = self.peer.receipts[self._receipts_reported :]  # signed ledger heads
        self._receipts_reported = len(self.peer.receipts)
        if rnd == self.cfg.train.num_rounds:  # the run's last round: what this site keeps
            report["kept"] = kept_figures(self.peer)
        return report

    def _evaluation(self) -> dict[str, Any]:
        s = self.peer.evaluate("test")
        report: dict[str, Any] = {
            "test_ppl": s.perplexity,
            "test_acc": s.accuracy,
            "step": self.peer.trainer.steps_done,
        }
        if self.peer.privacy is not None:
            report["privacy"] = self.peer.privacy.summary()
        return report
