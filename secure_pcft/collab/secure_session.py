"""Security for a one-machine simulation: keys, secure channels, encrypted-discovery state and the
per-round security log (docs/design.md, "Authenticated channel").

The round itself is :mod:`secure_pcft.collab.round` (the same steps a Flower site runs); a session
gives each peer the secure parts those steps use (:meth:`SecureSession.secure_peer`) and keeps what
the results file says about security: fingerprints, session-setup bytes, and per round whom each
peer selected, was willing to send to, sent to and declined (peer ids, no scores).

Threats mitigated (threat_models/): impersonation and tampering between simulated peers (TM-03,
every message in sealed envelopes under pinned keys); who-trusts-whom leaking to a curious peer
(TM-01: the log holds public facts only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from secure_pcft.collab.encrypted_discovery import PeerHe
from secure_pcft.collab.messages import MessageType
from secure_pcft.collab.round import SecurePeer
from secure_pcft.collab.secure_channel import SecureChannel
from secure_pcft.config import SecurityConfig
from secure_pcft.crypto.consortium import Consortium
from secure_pcft.crypto.envelope import InboxPolicy
from secure_pcft.crypto.he_similarity import ResponderPolicy
from secure_pcft.errors import ConfigError
from secure_pcft.transport.base import Transport
from secure_pcft.transport.meter import TrafficMeter


class SecureSession:
    """Keys, channels and discovery state of a secure simulation.

    Args:
        security: the run's ``[security]`` section (``mode`` must be ``full``).
        peer_ids: the peers of the run.
        consortium: their identities and roster; default: loaded from ``[security] key_dir``, or
            generated in memory when that is empty.
        meter: where the channels count what they send (HE contexts under its session scope).

    Raises:
        ConfigError: a peer id is not a valid peer name or has no key in ``key_dir``.
    """

    def __init__(
        self,
        security: SecurityConfig,
        peer_ids: Sequence[str],
        consortium: Consortium | None = None,
        meter: TrafficMeter | None = None,
    ) -> None:
        sec = security
        if sec.mode != "full":
            raise ConfigError("[security] mode: a secure session needs mode = 'full'")
        self.cfg = sec
        if consortium is None:
            consortium = (
                Consortium.load(sec.key_dir, peer_ids)
                if sec.key_dir
                else Consortium.generate(peer_ids)
            )
        self.consortium = consortium
        self.policy = InboxPolicy(
            max_body_bytes=sec.max_message_bytes,
            max_clock_skew_s=sec.max_clock_skew_s,
            round_window=sec.round_window,
        )
        responder_policy = ResponderPolicy(max_queries_per_round=sec.he_queries_per_round)
        self.channels: dict[str, SecureChannel] = {}
        self.agents = {pid: PeerHe(responder_policy) for pid in peer_ids}
        self.meter = meter if meter is not None else TrafficMeter()
        self.history: list[dict[str, Any]] = []

    def make_channel(self, peer_id: str, transport: Transport) -> SecureChannel:
        """A peer's secure channel on ``transport``, counting in this session's meter."""
        channel = SecureChannel(
            self.consortium.identity(peer_id),
            self.consortium.roster,
            transport,
            self.policy,
            meter=self.meter,
        )
        self.channels[peer_id] = channel
        return channel

    def secure_peer(self, peer_id: str) -> SecurePeer:
        """The secure parts of ``peer_id`` that the round's steps use.

        Raises:
            ConfigError: no channel was made for it in this session.
        """
        channel = self.channels.get(peer_id)
        if channel is None:
            raise ConfigError(f"peer {peer_id}: no secure channel in this session")
        roster = self.consortium.roster
        return SecurePeer(channel, self.agents[peer_id], lambda name: roster.get(name).fingerprint)

    def reset(self) -> None:
        """A new session on the same peers and keys (the simulation restarts from a snapshot)."""
        for channel in self.channels.values():
            channel.new_session()
        for agent in self.agents.values():
            agent.new_session()
        self.history.clear()

    def report(self) -> dict[str, Any]:
        """Public facts for the results file: fingerprints, session-setup bytes, selections."""
        contexts = self.meter.sent(msg_type=str(MessageType.HE_CONTEXT))
        return {
            "mode": self.cfg.mode,
            "consent": self.cfg.consent,
            "fingerprints": self.consortium.fingerprints(),
            "he_context_bytes": contexts.bytes,
            "he_context_messages": contexts.messages,
            "rounds": list(self.history),
        }
