"""The relay: schedules the steps of every round and forwards envelopes between peers, blind.

It sees only what a network would: opaque envelope bytes with the recipient peer id a peer put
next to each (``"*"``: a public envelope, forwarded to every other live peer), sizes, timing, and each peer's public step report (test metrics, applied trust row,
byte counts, ε spent). In ``[security] mode = "full"`` every envelope is sealed to its recipient
and signed by its sender, and peer ids are bound to Flower node ids by a signed hello checked
against the pinned roster (:mod:`.hello`) before anything is routed.

A peer that does not answer a step in time (dead process, lost node, error) is *missing* for the
rest of that round: it gets no further steps, envelopes for it are dropped, and the others
aggregate over what arrived (the protocol renormalises trust rows). Each round starts with a hello
to every connected node, so a peer that restarted rejoins at the next round from its saved state.
Rounds are never repeated: a resumed run starts after the last round any peer started.

Threats: TM-04 (untrusted relay: it can drop, delay or misroute envelopes, which peers detect or
survive as missing peers, but not read or forge them), TM-03 (network attacker: TLS + envelopes).
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from flwr.app import Message

from secure_pcft.collab.messages import PUBLIC_MESSAGE_TYPES, decode_message
from secure_pcft.collab.results import RoundRecord, RunResult, kept_summary, outcome_summary
from secure_pcft.collab.round import round_steps
from secure_pcft.collab.selection import round_log
from secure_pcft.collab.strategy import strategy_label
from secure_pcft.config import RunConfig
from secure_pcft.crypto.envelope import check_public_envelope
from secure_pcft.crypto.roster import Roster
from secure_pcft.errors import MessageError, SecurePcftError
from secure_pcft.runtime.flower.errors import HelloError
from secure_pcft.runtime.flower.hello import new_challenge, verify_hello
from secure_pcft.runtime.flower.records import MESSAGE_TYPE, StepReply, StepRequest
from secure_pcft.runtime.flower.steps import WARMUP
from secure_pcft.transport.base import BROADCAST

log = logging.getLogger(__name__)

HELLO = "hello"


class GridLike(Protocol):
    """The part of Flower's ``Grid`` the relay uses."""

    def get_node_ids(self) -> Iterable[int]: ...

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]: ...

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]: ...


@dataclass(frozen=True)
class RelaySettings:
    """How the relay runs.

    Attributes:
        step_timeout_s: seconds a peer has to answer one step before it counts as missing.
        wait_for_peers_s: seconds to wait at start for every peer to connect and answer its hello.
        min_peers: fewer live peers than this ends the run early (its results say so).
        poll_s: seconds between polls for replies.
    """

    step_timeout_s: float = 300.0
    wait_for_peers_s: float = 120.0
    min_peers: int = 2
    poll_s: float = 0.2


@dataclass
class _PeerView:
    node: int
    epoch: str
    completed: int | None
    started: int


@dataclass
class RelayLog:
    """What the relay accumulates for the results file."""

    records: list[RoundRecord] = field(default_factory=list)
    missing: dict[int, list[str]] = field(default_factory=dict)
    rejections: dict[str, list[dict[str, str]]] = field(default_factory=lambda: defaultdict(list))
    privacy: dict[str, Any] = field(default_factory=dict)
    security_rounds: list[dict[str, Any]] = field(default_factory=list)
    setup: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    hello_refused: list[dict[str, Any]] = field(default_factory=list)
    undelivered: int = 0
    abandoned_rounds: list[int] = field(default_factory=list)
    ended_early: str = ""
    kept: dict[str, dict[str, Any]] = field(default_factory=dict)  # per peer, at the last round
    public_refused: int = 0  # `*` wires not fanned out (malformed, oversize, foreign, not public)
    receipts: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))


class Relay:
    """Runs a whole collaboration over a Flower grid (the ServerApp's ``main``).

    Args:
        grid: Flower's grid (deployment or simulation).
        cfg: the consortium's run configuration.
        peer_ids: the run's peers in run order.
        roster: pinned identities (secure mode: hellos must verify against it).
        settings: timeouts and limits.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        grid: GridLike,
        cfg: RunConfig,
        peer_ids: tuple[str, ...],
        roster: Roster | None,
        settings: RelaySettings,
        clock: Callable[[], float] = time.monotonic,
        on_round: Callable[[], None] | None = None,
    ) -> None:
        self.grid = grid
        self.cfg = cfg
        self.peer_ids = peer_ids
        self.roster = roster
        self.settings = settings
        self.clock = clock
        self.on_round = on_round  # e.g. write the results so far: a killed relay loses no round
        self.schedule = round_steps(cfg)
        self.peers: dict[str, _PeerView] = {}
        self.log = RelayLog()
        self._restarted: set[str] = set()
        self._round_seconds = 0.0  # relay wall time of the last round (its hello included)
        self._epochs: dict[str, str] = {}  # last process epoch seen per peer, across rounds

    # ---- the run -------------------------------------------------------------------------------
    def run(self) -> RelayLog:
        self._bind_every_peer(self.clock() + self.settings.wait_for_peers_s)
        fresh = [p for p, v in self.peers.items() if v.completed is None]
        if fresh:
            self._warmup(fresh)
        started = [v.started for v in self.peers.values()] or [0]
        first = max(started) + 1
        self.log.abandoned_rounds = [
            r for r in range(1, first) if any(v.started == r and (v.completed or 0) < r
                                                 for v in self.peers.values())
        ]  # fmt: skip
        for rnd in range(first, self.cfg.train.num_rounds + 1):
            t0 = self.clock()
            if rnd > first:
                self._hello()
            live = [
                p for p in self.peer_ids if p in self.peers and self.peers[p].completed is not None
            ]
            if len(live) < self.settings.min_peers:
                self.log.ended_early = (
                    f"round {rnd}: {len(live)} live peers < {self.settings.min_peers}"
                )
                log.warning("relay: %s", self.log.ended_early)
                break
            self._round(rnd, live, t0)
        return self.log

    def _bind_every_peer(self, deadline: float) -> None:
        """Hello until every peer of the run is bound to a node, or ``deadline`` passed.

        Counting connected nodes is not enough: after a relay restart on the same database the SuperLink
        lists the nodes of before as online until their heartbeats expire, while their sites are
        still reconnecting; a run started then leaves a reconnecting peer out of its first round.
        """
        self._hello()
        while len(self.peers) < len(self.peer_ids) and self.clock() < deadline:
            time.sleep(1.0)
            self._hello()
        absent = [p for p in self.peer_ids if p not in self.peers]
        if absent:
            log.warning("relay: starting without %s (no valid hello by the deadline)", absent)

    # ---- hello -----------------------------------------------------------------------------------
    def _hello(self) -> None:
        """Bind every connected node to a verified peer id (re-done at each round)."""
        nodes = sorted(self.grid.get_node_ids())
        challenges = {n: new_challenge() for n in nodes}
        replies = self._exchange(
            HELLO,
            0,
            {n: StepRequest(HELLO, 0, info={"challenge": c}) for n, c in challenges.items()},
        )
        bound: dict[str, _PeerView] = {}
        for node, reply in replies.items():
            try:
                view = self._check_hello(node, reply.info, challenges[node])
            except HelloError as exc:
                self._refuse(node, str(exc))
                continue
            peer = str(reply.info["peer_id"])
            if peer in bound:
                self._refuse(node, f"{peer} answered twice")
                bound.pop(peer)
                continue
            if self._epochs.get(peer, view.epoch) != view.epoch:
                self._restarted.add(peer)  # a new process: others must resend their CKKS context
            self._epochs[peer] = view.epoch
            bound[peer] = view
        self.peers = bound

    def _refuse(self, node: int, reason: str) -> None:
        """Log a refused hello (once per node and reason: hellos repeat at every round)."""
        entry = {"node": node, "reason": reason}
        if entry not in self.log.hello_refused:
            self.log.hello_refused.append(entry)
            log.warning("relay: %s", reason)

    def _check_hello(self, node: int, info: Mapping[str, Any], challenge: str) -> _PeerView:
        peer = info.get("peer_id")
        if not isinstance(peer, str) or peer not in self.peer_ids:
            raise HelloError(f"node {node}: {peer!r} is not a peer of this run")
        if info.get("config") != self.cfg.digest():
            raise HelloError(f"node {node} ({peer}): runs another configuration")
        if self.roster is not None:
            verify_hello(
                self.roster,
                peer,
                str(info.get("signature", "")),
                challenge,
                node,
                self.cfg.digest(),
            )
        completed, started, epoch = (
            info.get("completed_round"),
            info.get("started_round"),
            info.get("epoch"),
        )
        if not (completed is None or type(completed) is int) or type(started) is not int:
            raise HelloError(f"node {node} ({peer}): malformed progress")
        return _PeerView(node, str(epoch), completed, started)

    # ---- rounds ----------------------------------------------------------------------------------
    def _warmup(self, peers: list[str]) -> None:
        t0 = self.clock()
        replies = self._exchange(
            WARMUP, 0, {self.peers[p].node: StepRequest(WARMUP, 0) for p in peers}
        )
        reports = {p: dict(r.info) for p, r in self._by_peer(replies).items()}
        for p, rep in reports.items():
            self.peers[p].completed = 0
            self._note_privacy(p, rep)
        missing = [p for p in self.peer_ids if p not in reports]
        for p in peers:
            if p not in reports:
                self.peers.pop(p, None)
        self._round_seconds = self.clock() - t0
        self._record(0, reports, missing)

    def _round(self, rnd: int, live: list[str], t0: float) -> None:
        pending: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
        reports: dict[str, dict[str, Any]] = {}
        alive = list(live)
        for step in self.schedule:
            info = {"restarted": sorted(self._restarted)} if step == self.schedule[0] else {}
            requests = {}
            for p in alive:
                inbound = pending.pop(p, [])
                requests[self.peers[p].node] = StepRequest(
                    step, rnd, tuple(s for s, _ in inbound), tuple(w for _, w in inbound), info
                )
            step_replies = self._by_peer(self._exchange(step, rnd, requests))
            self.log.undelivered += sum(len(v) for v in pending.values())
            pending.clear()
            alive = [p for p in alive if p in step_replies]
            for p in alive:
                reports[p] = dict(step_replies[p].info)
                self.log.rejections[p].extend(reports[p].get("rejections", []))
            for sender, reply in step_replies.items():
                for recipient, wire in zip(reply.recipients, reply.wires, strict=True):
                    if recipient == BROADCAST:  # one upload, a copy to every other live peer
                        if not self._public_ok(sender, wire):
                            continue
                        for other in alive:
                            if other != sender:
                                pending[other].append((sender, wire))
                    elif recipient in alive and recipient != sender:
                        pending[recipient].append((sender, wire))
                    else:
                        self.log.undelivered += 1
        self._restarted.clear()
        for p in alive:
            self.peers[p].completed = rnd
            self._note_privacy(p, reports[p])
        missing = [p for p in self.peer_ids if p not in alive]
        self._round_seconds = self.clock() - t0
        self._record(rnd, {p: reports[p] for p in alive}, missing)

    def _public_ok(self, sender: str, wire: bytes) -> bool:
        """A ``*`` wire is fanned out only if it is a well-framed public message of a public type,
        within the size limit and from the peer that uploaded it (secure mode: signed by that
        peer's pinned key); anything else is dropped and counted (``public_refused``)."""
        limit = self.cfg.security.max_message_bytes
        public = {str(t) for t in PUBLIC_MESSAGE_TYPES}
        try:
            if self.roster is not None:
                header = check_public_envelope(wire, self.roster, limit)
                who, kind = header.sender, header.msg_type
            else:
                msg = decode_message(wire, limit)
                who, kind = msg.sender, str(msg.msg_type)
                if msg.recipient != BROADCAST:
                    raise MessageError("public message not addressed to every peer")
            if who != sender or kind not in public:
                raise MessageError(
                    f"public wire of type {kind!r} from {who!r} uploaded by {sender}"
                )
        except SecurePcftError as exc:
            self.log.public_refused += 1
            log.warning("relay: dropped a public wire from %s: %s", sender, exc)
            return False
        return True

    # ---- messaging -------------------------------------------------------------------------------
    def _exchange(
        self, step: str, rnd: int, requests: Mapping[int, StepRequest]
    ) -> dict[int, StepReply]:
        """Send each node its request; return the valid replies that came back in time."""
        if not requests:  # no node to ask (none connected yet, or every peer dropped out)
            return {}
        timeout = self.settings.step_timeout_s
        messages = [
            Message(
                r.to_record(), dst_node_id=node, message_type=MESSAGE_TYPE, ttl=timeout,
                group_id=f"{rnd}:{step}",
            )
            for node, r in requests.items()
        ]  # fmt: skip
        ids = list(self.grid.push_messages(messages))
        wanted = {mid for mid in ids if mid}
        node_of = {mid: m.metadata.dst_node_id for mid, m in zip(ids, messages, strict=True)}
        replies: dict[int, StepReply] = {}
        deadline = self.clock() + timeout
        last_node_check = self.clock()
        while wanted and self.clock() < deadline:
            for msg in self.grid.pull_messages(list(wanted)):
                mid = msg.metadata.reply_to_message_id
                wanted.discard(mid)
                node = node_of.get(mid)
                if node is None or msg.metadata.src_node_id != node or msg.has_error():
                    continue
                try:
                    reply = StepReply.from_record(msg.content)
                except SecurePcftError as exc:
                    log.warning("relay: bad reply from node %s: %s", node, exc)
                    continue
                if reply.step == step and reply.round == rnd:
                    replies[node] = reply
            if wanted and self.clock() - last_node_check > 2.0:
                online = set(self.grid.get_node_ids())
                wanted = {mid for mid in wanted if node_of[mid] in online}
                last_node_check = self.clock()
            if wanted:
                time.sleep(self.settings.poll_s)
        return replies

    def _by_peer(self, replies: Mapping[int, StepReply]) -> dict[str, StepReply]:
        """Replies by verified peer id; a reply that reports an error counts as missing."""
        by_node = {v.node: p for p, v in self.peers.items()}
        out: dict[str, StepReply] = {}
        for node, reply in replies.items():
            peer = by_node.get(node)
            if peer is None:
                continue
            if "error" in reply.info:
                log.warning("relay: %s reported %s", peer, reply.info["error"])
                continue
            out[peer] = reply
        return out

    # ---- results ---------------------------------------------------------------------------------
    def _note_privacy(self, peer: str, report: Mapping[str, Any]) -> None:
        if "privacy" in report:
            self.log.privacy[peer] = report["privacy"]
        if isinstance(report.get("kept"), dict):
            self.log.kept[peer] = dict(report["kept"])
        if isinstance(report.get("receipts"), list):  # signed by their senders: kept as they came
            self.log.receipts[peer].extend(report["receipts"])
        if "setup_bytes" in report:
            epoch = self.peers[peer].epoch
            self.log.setup[(peer, epoch)] = (report["setup_bytes"], report["setup_messages"])

    def _record(
        self,
        rnd: int,
        reports: Mapping[str, Mapping[str, Any]],
        missing: list[str],
    ) -> None:
        ids = self.peer_ids

        def col(key: str, default: Any) -> list[Any]:
            return [reports[p].get(key, default) if p in reports else None for p in ids]

        first = next((reports[p] for p in ids if p in reports), {})
        record = RoundRecord(
            round=rnd,
            step=int(first.get("step", 0)),
            test_ppl=col("test_ppl", None),
            test_acc=col("test_acc", None),
            trust=[] if rnd == 0 else col("trust", None),
            bytes_sent=[int(reports[p].get("bytes_sent", 0)) if p in reports else 0 for p in ids],
            messages_sent=[
                int(reports[p].get("messages_sent", 0)) if p in reports else 0 for p in ids
            ],
            extra={"missing_peers": list(missing), "seconds": self._round_seconds},
        )
        if rnd > 0:
            record.extra.update({"adopted": col("adopted", ""), "alone": col("alone", False)})
        self.log.records.append(record)
        self.log.missing[rnd] = list(missing)
        if rnd > 0 and self.cfg.security.mode == "full":
            self.log.security_rounds.append(round_log(rnd, reports))
        if self.on_round is not None:
            self.on_round()


class FlowerRunResult(RunResult):
    """:class:`RunResult` whose per-peer lists may hold ``None`` for peers missing in a round."""

    def summary(self) -> dict[str, Any]:
        f, first = self.final, self.rounds[0]
        return {
            "strategy": self.strategy,
            "mean_test_ppl": _mean(f.test_ppl),
            "mean_test_acc": _mean(f.test_acc),
            "mean_test_ppl_after_warmup": _mean(first.test_ppl),
            "total_bytes_sent": sum(sum(r.bytes_sent) for r in self.rounds),
            "rounds": len(self.rounds) - (1 if first.round == 0 else 0),
            "seconds": self.seconds,
            "missing_peers": {str(r.round): r.extra.get("missing_peers", []) for r in self.rounds},
            **kept_summary(self.kept),
            **outcome_summary(self.rounds),
        }


def _mean(values: Sequence[float | None]) -> float:
    present = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(present) if present else float("nan")


def run_result(relay: Relay, relay_log: RelayLog, seconds: float) -> FlowerRunResult:
    """The results file of a Flower run: the loopback's fields plus who was missing when."""
    cfg = relay.cfg
    extra: dict[str, Any] = {
        "runtime": "flower",
        "missing_peers": {str(k): v for k, v in relay_log.missing.items()},
        "abandoned_rounds": relay_log.abandoned_rounds,
        "undelivered_envelopes": relay_log.undelivered,
        "public_refused": relay_log.public_refused,
        "hello_refused": relay_log.hello_refused,
    }
    if relay_log.ended_early:
        extra["ended_early"] = relay_log.ended_early
    setup = relay_log.setup.values()
    started = datetime.now(UTC) - timedelta(seconds=seconds)
    return FlowerRunResult.assemble(
        cfg,
        label=strategy_label(cfg.strategy),
        peer_ids=relay.peer_ids,
        base_model=str(cfg.model.base),
        data=f"{cfg.data.source}: {len(relay.peer_ids)} peers (each site reads only its own data)",
        rounds=relay_log.records,
        rejections=relay_log.rejections,
        kept=[relay_log.kept.get(p, {}) for p in relay.peer_ids],
        seconds=seconds,
        started_at=started.isoformat(timespec="seconds"),
        privacy=relay_log.privacy,
        receipts={p: list(relay_log.receipts.get(p, [])) for p in relay.peer_ids},
        security={
            "mode": cfg.security.mode,
            "consent": cfg.security.consent,
            "fingerprints": {p.name: p.fingerprint for p in relay.roster} if relay.roster else {},
            "he_context_bytes": sum(b for b, _ in setup),
            "he_context_messages": sum(m for _, m in setup),
            "rounds": relay_log.security_rounds,
        },
        extra=extra,
    )


def write_result(result: RunResult, path: Path) -> Path:
    """Write the results JSON atomically (``None`` for missing peers' values)."""
    return result.write_json(path)
