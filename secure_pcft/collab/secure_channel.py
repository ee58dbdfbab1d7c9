"""The secure channel: :class:`Message` objects in signed, encrypted envelopes (docs/design.md,
"Authenticated channel").

Sending: ``encode_message(msg)`` → :meth:`Sealer.seal` to the recipient's pinned keys → transport.
Publishing (a public type only: a CKKS public context): :meth:`Sealer.seal_public`, signed and
unencrypted, handed to the transport once for every peer.
Receiving: :meth:`Inbox.open` (framing, roster, signature, recipient, clock skew, round window,
replay, decryption) → ``decode_message`` → the decoded header must equal the authenticated envelope
header (sender, recipient, type, round) → for ``ADAPTER`` messages, :func:`check_adapter` against
the receiver's own adapter spec with norm bounds. Anything that fails is recorded as a
:class:`Rejection` (who and why, never content) and dropped; the round goes on.

The transport's claimed sender is ignored once an envelope verifies: the signature, not the network
address, says who sent it (a relay may forward envelopes in its own name).

Threats mitigated (threat_models/): impersonation, injection and replay by a network attacker
(TM-03); an eavesdropping relay (TM-04); malformed, oversize or scaled (poisoned) adapters from a
roster member (TM-02).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping

import torch

from secure_pcft.collab.channel import Rejection, check_public
from secure_pcft.collab.messages import Message, MessageType, decode_message, encode_message
from secure_pcft.crypto.adapter_checks import AdapterSpec, check_adapter
from secure_pcft.crypto.envelope import Clock, Inbox, InboxPolicy, OpenedMessage, Sealer
from secure_pcft.crypto.identity import Identity
from secure_pcft.crypto.roster import Roster
from secure_pcft.errors import AdapterRejectedError, MessageError, SecurePcftError
from secure_pcft.transport.base import BROADCAST, Transport
from secure_pcft.transport.meter import TrafficMeter

log = logging.getLogger(__name__)

# Below this the bound is the floor: an untrained (all-zero) own adapter must not reject everyone.
NORM_FLOOR = 1e-3


def norm_bounded_spec(own: Mapping[str, torch.Tensor], ratio: float) -> AdapterSpec:
    """Spec of a valid received adapter: own names/shapes/dtypes, norms ≤ ``ratio`` × own norms.

    Per tensor the bound is ``ratio`` × the largest own tensor norm; over the whole adapter it is
    ``ratio`` × the own global norm (each at least ``NORM_FLOOR``). Honest peers of one consortium
    train the same LoRA shapes with the same recipe, so their norms stay within a small factor of
    each other; a scaled (boosted) adapter does not.

    Args:
        own: the receiver's own adapter state (name -> tensor).
        ratio: allowed multiple of the own norms (> 1).
    """
    norms = [float(t.detach().to(torch.float64).norm()) for t in own.values()]
    global_norm = math.sqrt(sum(n * n for n in norms))
    return AdapterSpec.from_state_dict(
        own,
        max_tensor_norm=max(ratio * max(norms, default=0.0), NORM_FLOOR),
        max_global_norm=max(ratio * global_norm, NORM_FLOOR),
    )


class SecureChannel:
    """A peer's end of the message layer, through sealed envelopes.

    Implements the :class:`~secure_pcft.collab.channel.Channel` protocol. A round driver calls
    :meth:`begin_round` when the peer begins a round (it moves the envelope round window) and
    :meth:`expect_adapters` with the spec received adapters must meet (adapters are refused until
    a spec is set: fail closed).

    Args:
        identity: this peer's secret keys (``identity.name`` is the peer id).
        roster: pinned public identities of everyone allowed to talk.
        transport: moves the sealed bytes.
        policy: size, clock-skew and round-window limits of the receiving side.
        clock: seconds since the epoch (injectable for tests).
        meter: where sent envelopes are counted (default: a meter of its own).
    """

    def __init__(
        self,
        identity: Identity,
        roster: Roster,
        transport: Transport,
        policy: InboxPolicy | None = None,
        *,
        clock: Clock | None = None,
        meter: TrafficMeter | None = None,
    ) -> None:
        self.peer_id = identity.name
        self.rejections: list[Rejection] = []
        self.transport = transport
        self._identity = identity
        self._roster = roster
        self._policy = policy or InboxPolicy()
        self._clock = clock  # None: stamp with the wall clock, judge ages by an anchored one
        self._sealer = Sealer(identity, clock=clock or time.time)
        self._inbox = Inbox(identity, roster, self._policy, clock=clock)
        self._adapter_spec: AdapterSpec | None = None
        self.meter = meter if meter is not None else TrafficMeter()

    def __repr__(self) -> str:
        return f"SecureChannel(peer_id={self.peer_id!r}, round={self._inbox.current_round})"

    # ---- session and round state -------------------------------------------------------------
    @property
    def current_round(self) -> int:
        return self._inbox.current_round

    def begin_round(self, rnd: int) -> None:
        """Move the accepted round window to ``rnd`` (rounds never go back within a session).

        Raises:
            ConfigError: ``rnd`` is below the current round.
        """
        self._inbox.advance_round(rnd)

    def sign(self, data: bytes) -> bytes:
        """A detached Ed25519 signature of this peer's pinned identity over ``data`` (signed
        statements that travel inside sealed messages, e.g. ledger heads, crypto/ledger_heads.py;
        each kind prefixes its own domain-separation context)."""
        return self._identity.sign(data)

    def expect_adapters(self, spec: AdapterSpec) -> None:
        """Set what a received adapter must look like (names, shapes, dtypes, norm bounds)."""
        self._adapter_spec = spec

    def new_session(self) -> None:
        """Start a new session (e.g. a simulation restarting from a snapshot at round 1).

        The receiving state (round window, replay window) starts over; the sender's
        sequence numbers keep rising (clock-based), and the signing keys are unchanged.
        """
        self._inbox = Inbox(self._identity, self._roster, self._policy, clock=self._clock)
        self._adapter_spec = None

    # ---- Channel protocol ----------------------------------------------------------------------
    def send(self, msg: Message) -> None:
        """Seal ``msg`` to its recipient's pinned keys and hand it to the transport.

        Raises:
            MessageError: ``msg`` is not in this peer's own name.
            UnknownPeerError: the recipient is not on the roster.
        """
        if msg.sender != self.peer_id:
            raise MessageError("a peer may only send messages in its own name")
        recipient = self._roster.get(msg.recipient)
        wire = self._sealer.seal(recipient, str(msg.msg_type), msg.round, encode_message(msg))
        self.transport.send(self.peer_id, msg.recipient, wire)
        self.meter.record(self.peer_id, msg.recipient, str(msg.msg_type), len(wire))

    def publish(self, msg: Message) -> None:
        """Sign ``msg`` as a public envelope (not encrypted) and hand it to the transport once,
        for every peer; only public message types (a CKKS public context) may go this way.

        Raises:
            MessageError: ``msg`` is not in this peer's own name, not addressed to ``"*"``, or
                of a type that must stay confidential.
        """
        if msg.sender != self.peer_id:
            raise MessageError("a peer may only send messages in its own name")
        check_public(msg)
        wire = self._sealer.seal_public(str(msg.msg_type), msg.round, encode_message(msg))
        self.transport.broadcast(self.peer_id, wire)
        self.meter.record(self.peer_id, BROADCAST, str(msg.msg_type), len(wire))

    def receive(self) -> list[Message]:
        """Open, decode and check everything queued for this peer; reject (and record) the rest."""
        out: list[Message] = []
        for claimed, wire in self.transport.receive(self.peer_id):
            try:
                opened = self._inbox.open(wire)  # logs its own rejections
            except SecurePcftError as exc:
                self.rejections.append(Rejection(claimed, type(exc).__name__, str(exc)))
                continue
            try:
                msg = decode_message(opened.body, self._policy.max_body_bytes)
                self._check_binding(msg, opened)
                if msg.msg_type is MessageType.ADAPTER:
                    self._check_adapter(msg)
            except SecurePcftError as exc:
                self.rejections.append(Rejection(opened.sender, type(exc).__name__, str(exc)))
                log.warning(
                    "%s rejected a %s message from %s: %s (%s)",
                    self.peer_id,
                    opened.msg_type,
                    opened.sender,
                    exc,
                    type(exc).__name__,
                )
                continue
            out.append(msg)
        return out

    # ---- checks --------------------------------------------------------------------------------
    def _check_binding(self, msg: Message, opened: OpenedMessage) -> None:
        """The decoded header must repeat the authenticated envelope header exactly; a public
        envelope may carry only a public message type."""
        if msg.sender != opened.sender:
            raise MessageError("message sender differs from the envelope's signer")
        if msg.recipient != opened.recipient:
            raise MessageError("message recipient differs from the envelope's recipient")
        if opened.public:
            check_public(msg)
        if str(msg.msg_type) != opened.msg_type:
            raise MessageError("message type differs from the envelope's type")
        if msg.round != opened.round:
            raise MessageError("message round differs from the envelope's round")

    def _check_adapter(self, msg: Message) -> None:
        if self._adapter_spec is None:
            raise AdapterRejectedError("no adapter spec set for this round; adapters refused")
        check_adapter(msg.tensors, self._adapter_spec)
