"""A site: one peer of a run on its own machine, with its private data, keys and saved state.

A SuperNode's node config names the site (``--node-config``)::

    site-dir = "/srv/secure-pcft/plant-a"   # private: state, ledgers, results of this peer
    config   = "/srv/secure-pcft/run.toml"  # the consortium's run configuration (same file everywhere)
    peer-id  = "plant-a"                    # this site's peer id (its key name in the roster)
    key-dir  = "/srv/secure-pcft/keys"      # optional: <peer-id>.key + roster.json
                                            #           (default: [security] key_dir of the config)

:class:`Site` builds the peer once per process, resumes it from ``<site-dir>/state`` (see
:mod:`.site_state`), runs the steps the relay asks for, and saves the state at every round
boundary. Its ledger is ``<site-dir>/ledgers/<peer-id>.ledger.jsonl``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from secure_pcft.collab.channel import Channel, PlainChannel
from secure_pcft.collab.encrypted_discovery import PeerHe
from secure_pcft.collab.peer import Peer
from secure_pcft.collab.round import SecurePeer
from secure_pcft.collab.secure_channel import SecureChannel
from secure_pcft.config import RunConfig, load_config
from secure_pcft.crypto.consortium import ROSTER_FILE, key_path
from secure_pcft.crypto.envelope import InboxPolicy
from secure_pcft.crypto.he_similarity import ResponderPolicy
from secure_pcft.crypto.identity import Identity
from secure_pcft.crypto.roster import Roster
from secure_pcft.data.blocks import encode_blocks
from secure_pcft.data.corpus import Federation, PeerCorpus
from secure_pcft.data.settings import load_federation
from secure_pcft.errors import ConfigError, SecurePcftError
from secure_pcft.model.loading import BaseModel, load_base, resolve_base_path
from secure_pcft.plugins import load_plugins
from secure_pcft.privacy.budget_store import BudgetStore, default_store_dir
from secure_pcft.runtime.assembly import RunPlan, build_peer
from secure_pcft.runtime.flower.errors import RelayRecordError
from secure_pcft.runtime.flower.hello import sign_hello
from secure_pcft.runtime.flower.mailbox import RelayMailbox
from secure_pcft.runtime.flower.records import StepReply, StepRequest
from secure_pcft.runtime.flower.site_state import SavedState, SiteStore
from secure_pcft.runtime.flower.steps import WARMUP, PeerSession

log = logging.getLogger(__name__)

HELLO = "hello"


@dataclass(frozen=True)
class SiteSpec:
    """Where a site keeps its things (see the module docstring)."""

    site_dir: Path
    config: Path
    peer_id: str
    key_dir: Path | None = None

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any]) -> SiteSpec:
        """Read ``site-dir``, ``config``, ``peer-id`` and optional ``key-dir``.

        Raises:
            ConfigError: a required key is missing or not a string.
        """
        values = {}
        for key in ("site-dir", "config", "peer-id"):
            value = node_config.get(key)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"SuperNode --node-config: {key} must be a non-empty string")
            values[key] = value
        key_dir = node_config.get("key-dir")
        return cls(
            Path(values["site-dir"]).expanduser(),
            Path(values["config"]).expanduser(),
            values["peer-id"],
            Path(str(key_dir)).expanduser() if key_dir else None,
        )


# ---- what every peer of a process shares (simulation hosts many peers per process) -----------
@lru_cache(maxsize=4)
def _base(path: str) -> BaseModel:
    return load_base(Path(path))


@lru_cache(maxsize=4)
def _federation(config: Path, digest: str) -> Federation:
    return load_federation(load_config(config).data)


def run_peer_ids(cfg: RunConfig, config: Path) -> tuple[str, ...]:
    """The peers of the run, in run order (the order fixes seeds, as in the loopback runtime)."""
    if cfg.data.source == "files":
        return tuple(Path(p).name if Path(p).is_dir() else Path(p).stem for p in cfg.data.paths)
    return _federation(config, cfg.digest()).peer_ids


def _own_data(cfg: RunConfig, config: Path, peer_id: str) -> tuple[PeerCorpus, Federation]:
    d = cfg.data
    if d.source == "files":  # read only this site's own file (others' paths name their peers)
        own = [
            p for p in d.paths if (Path(p).name if Path(p).is_dir() else Path(p).stem) == peer_id
        ]
        if len(own) != 1:
            raise ConfigError(f"[data] paths: no single entry for peer {peer_id!r}")
        fed = load_federation(replace(d, paths=tuple(own)))
        return fed.peers[0], fed
    fed = _federation(config, cfg.digest())
    return fed.peers[fed.peer_ids.index(peer_id)], fed


class Site:
    """One peer, resumed from its saved state, answering the relay's steps.

    Raises:
        ConfigError: the peer id is not a peer of the run, or keys are missing in secure mode.
        StateError: the saved state is torn or from another run configuration.
    """

    def __init__(self, spec: SiteSpec) -> None:
        self.spec = spec
        load_plugins(())  # installed plugins: a config may name what they register
        cfg = load_config(spec.config)
        self.cfg = cfg
        peer_ids = run_peer_ids(cfg, spec.config)
        if spec.peer_id not in peer_ids:
            raise ConfigError(f"peer {spec.peer_id!r} is not a peer of the run {peer_ids}")
        index = peer_ids.index(spec.peer_id)
        corpus, fed = _own_data(cfg, spec.config, spec.peer_id)
        base = _base(str(resolve_base_path(cfg.model)))
        self.mailbox = RelayMailbox(spec.peer_id, peer_ids)
        self.identity: Identity | None = None
        secure: SecurePeer | None = None
        channel: Channel
        if cfg.security.mode == "full":
            secure = self._secure_parts(cfg, peer_ids)
            channel = secure.channel
        else:
            channel = PlainChannel(spec.peer_id, self.mailbox, cfg.security.max_message_bytes)
        spec.site_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        plan = RunPlan.of(cfg, len(peer_ids))
        store = BudgetStore(default_store_dir(cfg.privacy.budget_store))  # used with DP only
        peer = build_peer(
            plan, index, peer_ids, corpus, base, channel, spec.site_dir / "ledgers", store
        )
        mixes = tuple(
            dict(fed.peers[fed.peer_ids.index(p)].domain_mix) if p in fed.peer_ids else {}
            for p in peer_ids
        )
        reference = encode_blocks(fed.reference, base.tokenizer, cfg.data.block_size)  # public
        self.store = SiteStore(spec.site_dir, spec.peer_id, cfg.digest())
        saved = self.store.load()
        self.completed_round: int | None = None
        if saved is not None:
            peer.set_adapter(saved.adapter)
            peer.trainer.load_state_dict(saved.trainer)
            peer.restore_rng((saved.rng, None))  # a GPU stream restarts from the CPU one
            peer.kept = saved.kept
            self.completed_round = saved.completed_round
            _reconcile_released_steps(peer, saved.completed_round)
            log.info("%s resumes after round %d", spec.peer_id, saved.completed_round)
        self.session = PeerSession(peer, plan, reference, mixes, secure)
        self.lock = threading.Lock()

    def _secure_parts(self, cfg: RunConfig, peer_ids: tuple[str, ...]) -> SecurePeer:
        key_dir = self.spec.key_dir or (
            Path(cfg.security.key_dir) if cfg.security.key_dir else None
        )
        if key_dir is None:
            raise ConfigError(
                "[security] mode='full' on a site needs key-dir (node config) or key_dir"
            )
        self.identity = Identity.load(key_path(key_dir, self.spec.peer_id))
        roster = Roster.load(key_dir / ROSTER_FILE)
        roster.verify(self.identity.public())
        sec = cfg.security
        policy = InboxPolicy(
            max_body_bytes=sec.max_message_bytes,
            max_clock_skew_s=sec.max_clock_skew_s,
            round_window=sec.round_window,
        )
        channel = SecureChannel(self.identity, roster, self.mailbox, policy)
        agent = PeerHe(ResponderPolicy(max_queries_per_round=sec.he_queries_per_round))
        return SecurePeer(channel, agent, lambda name: roster.get(name).fingerprint)

    # ---- the relay's requests --------------------------------------------------------------
    def handle(self, request: StepRequest, node_id: int) -> StepReply:
        """Run one request; typed failures become an ``error`` report (the relay marks us missing).

        Other exceptions propagate (Flower turns them into an error reply).
        """
        with self.lock:
            try:
                self.mailbox.receive(self.spec.peer_id)  # nothing left over from a failed step
                self.mailbox.deliver(list(zip(request.senders, request.wires, strict=True)))
                info = self._dispatch(request, node_id)
            except SecurePcftError as exc:
                log.warning(
                    "%s refused %s/%d: %s", self.spec.peer_id, request.step, request.round, exc
                )
                self.mailbox.take_outbox()  # nothing of a failed step leaves the site
                info = {"error": f"{type(exc).__name__}: {exc}"}
            out = self.mailbox.take_outbox()
        return StepReply(
            request.step,
            request.round,
            tuple(r for r, _ in out),
            tuple(w for _, w in out),
            info,
        )

    def _dispatch(self, req: StepRequest, node_id: int) -> dict[str, Any]:
        s = self.session
        if req.step == HELLO:
            return self._hello(req, node_id)
        if req.step == WARMUP:
            if self.completed_round is not None:
                raise RelayRecordError("warm-up requested but this peer has saved state already")
            report = s.run(WARMUP, 0, req.info)
            self._save(0)
            return report
        if req.step == s.schedule[0]:
            done = -1 if self.completed_round is None else self.completed_round
            if self.completed_round is None or req.round <= max(done, self.store.started_round()):
                raise RelayRecordError(
                    f"round {req.round} asked, but this peer completed round {done} and started "
                    f"round {self.store.started_round()} (rounds are never run twice)"
                )
            self.store.mark_started(req.round)  # durable before anything can be released
        report = s.run(req.step, req.round, req.info)
        if req.step == s.schedule[-1]:
            self._save(req.round)
        return report

    def _hello(self, req: StepRequest, node_id: int) -> dict[str, Any]:
        challenge = req.info.get("challenge")
        if not isinstance(challenge, str) or len(challenge) != 64:
            raise RelayRecordError("hello without a 32-byte hex challenge")
        info: dict[str, Any] = {
            "peer_id": self.spec.peer_id,
            "config": self.cfg.digest(),
            "epoch": self.session.epoch,
            "completed_round": self.completed_round,
            "started_round": self.store.started_round(),
        }
        if self.identity is not None:
            info["signature"] = sign_hello(self.identity, challenge, node_id, self.cfg.digest())
        return info

    def _save(self, rnd: int) -> None:
        p = self.session.peer
        self.store.save(SavedState(rnd, p.adapter(), p.trainer.state_dict(), p.dropout_rng, p.kept))
        self.completed_round = rnd


def _reconcile_released_steps(peer: Peer, completed_round: int) -> None:
    """After a restart, never count the restored DP-SGD steps twice in the ledger.

    The saved trainer state is from the end of ``completed_round``. If the ledger holds a
    DP-SGD release from a later round, that release came from a process that had trained past the
    saved point, so it already accounted every step up to it: those steps are released. Only the
    steps trained after the restore will be recorded by the next release (no double counting; the
    abandoned steps stay recorded, as they were released).
    """
    privacy = peer.privacy
    if privacy is None or privacy.ledger is None:
        return
    trainer = privacy.trainer
    later = [e for e in privacy.ledger.events if e.steps > 0 and e.round > completed_round]
    if later:
        trainer.steps_released = max(trainer.steps_released, trainer.steps_done)


_SITES: dict[SiteSpec, Site] = {}
_SITES_LOCK = threading.Lock()


def site_for(spec: SiteSpec) -> Site:
    """The process's :class:`Site` for ``spec`` (built on first use, then kept in memory)."""
    with _SITES_LOCK:
        site = _SITES.get(spec)
        if site is None:
            site = _SITES[spec] = Site(spec)
        return site
