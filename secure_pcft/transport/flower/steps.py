"""One round's phases as steps a single peer runs on its own machine, between relay hops.

The loopback simulation runs each phase for all peers in turn (collab/protocol.py,
collab/secure_round.py). Here the relay runs one *step* on every peer, collects the envelopes they
send, and delivers them with the next step. The work inside a step is the same library code:

=========  ===================================================  ===============================
step       plain (``[security] mode = "off"``)                   secure (``"full"``)
=========  ===================================================  ===============================
warmup     local warm-up steps; evaluate (round 0)               same
discover   local steps; ``protocol.discover``                    local steps; begin round; CKKS
                                                                 context (once) + query to all
respond    —                                                     answer the encrypted queries
select     ``protocol.score`` + ``protocol.request``             decrypt cosines → row → select
                                                                 → ``protocol.request``
answer     ``protocol.answer``                                   ``answer_with_consent``
aggregate  ``protocol.aggregate``; evaluate                      (rescore) ``aggregate``; evaluate
=========  ===================================================  ===============================

Strategies without discovery skip ``respond`` in secure mode (their ``select`` scores as the
loopback does). :func:`round_steps` is the schedule both the relay and the peers follow.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from secure_pcft.collab.encrypted_discovery import (
    PeerHe,
    collect_answers,
    respond,
    send_contexts,
    send_queries,
)
from secure_pcft.collab.peer import Peer
from secure_pcft.collab.protocol import aggregate, answer, discover, request, score
from secure_pcft.collab.secure_channel import SecureChannel, norm_bounded_spec
from secure_pcft.collab.secure_round import (
    Exchange,
    answer_with_consent,
    consented,
    restrict,
    select_peers,
    willing_peers,
)
from secure_pcft.collab.strategy import (
    TrustStrategy,
    discovery_spec,
    make_strategy,
    needs_encrypted_discovery,
)
from secure_pcft.config import RunConfig
from secure_pcft.transport.flower.errors import RelayRecordError
from secure_pcft.transport.meter import SESSION_SETUP

log = logging.getLogger(__name__)

WARMUP = "warmup"


def round_steps(cfg: RunConfig) -> tuple[str, ...]:
    """The steps of one aggregation round for ``cfg`` (the warm-up is the single step ``warmup``).

    Raises:
        ConfigError: secure mode with a discovery strategy that has no encrypted rule.
    """
    if cfg.security.mode != "full":
        return ("discover", "select", "answer", "aggregate")
    if not needs_encrypted_discovery(make_strategy(cfg.strategy)):
        return ("discover", "select", "answer", "aggregate")
    return ("discover", "respond", "select", "answer", "aggregate")


def reference_batch(reference: torch.Tensor, cfg: RunConfig, rnd: int) -> torch.Tensor:
    """The public reference batch of round ``rnd`` — the same rule as the loopback simulation."""
    n = min(reference.shape[0], cfg.strategy.reference_batches * cfg.train.batch_size)
    g = torch.Generator().manual_seed(cfg.lora.public_seed + 7 * rnd)
    return reference[torch.randperm(reference.shape[0], generator=g)[:n]]


@dataclass
class SecureParts:
    """A peer's secure-mode state for one process lifetime (keys stay on the site)."""

    channel: SecureChannel
    agent: PeerHe
    fingerprint: Callable[[str], str]  # peer id -> roster fingerprint


@dataclass
class RoundScratch:
    """What a peer carries between the steps of one round (kept in memory, never sent)."""

    round: int
    done: list[str] = field(default_factory=list)
    vector: npt.NDArray[np.float64] | None = None
    row: torch.Tensor | None = None
    selected: set[int] = field(default_factory=set)
    willing: set[int] = field(default_factory=set)
    exchange: Exchange = field(default_factory=Exchange)


class PeerSession:
    """A peer driven step by step by a relay.

    Args:
        peer: the peer (its channel writes to the relay mailbox and counts in its meter).
        reference: public reference blocks (R, T).
        domain_mixes: per peer of the run, its known domain mix (empty dicts when unknown).
        secure: secure-mode parts, or None in plain mode.
    """

    def __init__(
        self,
        peer: Peer,
        reference: torch.Tensor,
        domain_mixes: tuple[dict[str, float], ...],
        secure: SecureParts | None,
    ) -> None:
        self.peer = peer
        self.cfg = peer.cfg
        self.meter = peer.channel.meter
        self.reference = reference
        self.domain_mixes = domain_mixes
        self.secure = secure
        self.strategy: TrustStrategy = make_strategy(self.cfg.strategy)
        self.encrypted_discovery = secure is not None and needs_encrypted_discovery(self.strategy)
        self.schedule = round_steps(self.cfg)
        self.scratch: RoundScratch | None = None
        self.epoch = secrets.token_hex(8)  # changes when the peer's process restarts
        self._rejections_reported = 0

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
        s = self.scratch
        if s is None or s.round != rnd or s.done != list(self.schedule[:i]):
            raise RelayRecordError(f"step {step!r} of round {rnd} before the steps preceding it")

    def run(self, step: str, rnd: int, info: dict[str, Any]) -> dict[str, Any]:
        """Run one step (see the module table); returns the public report of the step."""
        self.check_order(step, rnd)
        report = getattr(self, f"_step_{step}")(rnd, info)
        if step != WARMUP and self.scratch is not None:
            self.scratch.done.append(step)
        new = self.peer.channel.rejections[self._rejections_reported :]
        self._rejections_reported += len(new)
        report["rejections"] = [r.__dict__ for r in new]
        return dict(report)

    # ---- steps ---------------------------------------------------------------------------------
    def _step_warmup(self, rnd: int, info: dict[str, Any]) -> dict[str, Any]:
        self.peer.train(self.cfg.train.warmup_steps)
        self.meter.begin_round(0)
        return self._evaluation()

    def _step_discover(self, rnd: int, info: dict[str, Any]) -> dict[str, Any]:
        peer, sec = self.peer, self.secure
        self.scratch = RoundScratch(rnd)
        for other in info.get("restarted", []):  # their new process needs our context again
            if sec is not None and isinstance(other, str):
                sec.agent.contexts_sent.discard(other)
        peer.train(self.cfg.train.local_steps)
        self.meter.begin_round(rnd)
        peer.begin_round(rnd)
        ref = reference_batch(self.reference, self.cfg, rnd)
        if sec is None:
            discover(peer, self.strategy, ref)
            return {}
        sec.channel.begin_round(rnd)
        sec.channel.expect_adapters(
            norm_bounded_spec(peer.adapter(), self.cfg.security.max_adapter_norm_ratio)
        )
        if self.encrypted_discovery:
            spec = discovery_spec(self.cfg)
            self.scratch.vector = self.strategy.encrypted_vector(peer, ref, spec)
            with self.meter.session_setup():  # counted apart, as the loopback does
                send_contexts(peer, sec.agent)
            send_queries(peer, self.scratch.vector, sec.agent)
        return {}

    def _step_respond(self, rnd: int, info: dict[str, Any]) -> dict[str, Any]:
        assert self.secure is not None and self.scratch is not None
        assert self.scratch.vector is not None
        respond(self.peer, self.scratch.vector, rnd, self.secure.agent, self.secure.fingerprint)
        return {}

    def _step_select(self, rnd: int, info: dict[str, Any]) -> dict[str, Any]:
        peer, sec, scratch = self.peer, self.secure, self.scratch
        assert scratch is not None
        ref = reference_batch(self.reference, self.cfg, rnd)
        if sec is not None and self.encrypted_discovery:
            cos = collect_answers(peer, rnd, sec.agent)
            row = self.strategy.encrypted_row(cos, peer.index)
            scratch.selected = select_peers(row, cos, peer.index, self.cfg.security)
            scratch.willing = willing_peers(row, cos, peer.index, self.cfg.security)
            row = restrict(row, scratch.selected, peer.index)
        else:
            row = score(peer, self.strategy, ref, self.domain_mixes)
            if sec is not None:
                scratch.selected = select_peers(row, None, peer.index, self.cfg.security)
                scratch.willing = scratch.selected
        scratch.row = row
        request(peer, row)
        return {}

    def _step_answer(self, rnd: int, info: dict[str, Any]) -> dict[str, Any]:
        assert self.scratch is not None
        if self.secure is None:
            answer(self.peer)
            return {}
        allowed = consented(
            self.cfg.security, self.scratch.selected, self.scratch.willing, len(self.peer.peer_ids)
        )
        self.scratch.exchange = answer_with_consent(self.peer, allowed - {self.peer.index})
        return {}

    def _step_aggregate(self, rnd: int, info: dict[str, Any]) -> dict[str, Any]:
        scratch, peer = self.scratch, self.peer
        assert scratch is not None and scratch.row is not None
        row = scratch.row
        if self.encrypted_discovery and self.strategy.rescore_after_exchange:
            ref = reference_batch(self.reference, self.cfg, rnd)
            row = score(peer, self.strategy, ref, self.domain_mixes)
        applied = aggregate(peer, row)
        report = self._evaluation()
        ids = peer.peer_ids
        report["trust"] = [float(x) for x in applied.tolist()]
        sent, setup = self.meter.sent(rnd), self.meter.sent(SESSION_SETUP)
        report["bytes_sent"] = sent.bytes
        report["messages_sent"] = sent.messages
        report["setup_bytes"] = setup.bytes
        report["setup_messages"] = setup.messages
        if self.secure is not None:
            report["selected"] = [ids[j] for j in sorted(scratch.selected)]
            report["willing"] = [ids[j] for j in sorted(scratch.willing)]
            report["adapters_sent"] = [ids[j] for j in scratch.exchange.sent]
            report["declined"] = [ids[j] for j in scratch.exchange.declined]
            report["refused_budget"] = [ids[j] for j in scratch.exchange.refused_budget]
        return report

    # ---- helpers -------------------------------------------------------------------------------
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
