"""Channels: how a peer turns :class:`Message` objects into bytes on a transport and back.

``PlainChannel`` only encodes/decodes (the foundation). The secure channel (crypto/) wraps the same
bytes in signed, encrypted envelopes; peers see the same interface either way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from secure_pcft.collab.messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    PUBLIC_MESSAGE_TYPES,
    Message,
    decode_message,
    encode_message,
)
from secure_pcft.errors import MessageError
from secure_pcft.transport.base import BROADCAST, Transport
from secure_pcft.transport.meter import TrafficMeter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rejection:
    """A message a peer refused: who it claimed to be from and the error class (no content)."""

    claimed_sender: str
    error: str
    reason: str


class Channel(Protocol):
    """A peer's end of the message layer; it counts what it hands to the transport in ``meter``."""

    peer_id: str
    rejections: list[Rejection]
    meter: TrafficMeter

    def send(self, msg: Message) -> None: ...

    def publish(self, msg: Message) -> None:
        """Send ``msg`` (recipient :data:`BROADCAST`, a public type) to every peer at once."""
        ...

    def receive(self) -> list[Message]: ...


def check_public(msg: Message) -> None:
    """A public message must be addressed to :data:`BROADCAST` and of a public type.

    Raises:
        MessageError: it is not.
    """
    if msg.recipient != BROADCAST:
        raise MessageError(f"a public message is addressed to {BROADCAST!r}")
    if msg.msg_type not in PUBLIC_MESSAGE_TYPES:
        raise MessageError(f"{msg.msg_type} messages may not travel in public")


class PlainChannel:
    """Messages as plain bytes on the transport: integrity of format, not of origin.

    Args:
        peer_id: this peer.
        transport: moves the bytes.
        max_bytes: largest accepted message.
        meter: where sent messages are counted (default: a meter of its own).
    """

    def __init__(
        self,
        peer_id: str,
        transport: Transport,
        max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        meter: TrafficMeter | None = None,
    ) -> None:
        self.peer_id = peer_id
        self.transport = transport
        self.max_bytes = max_bytes
        self.meter = meter if meter is not None else TrafficMeter()
        self.rejections: list[Rejection] = []

    def send(self, msg: Message) -> None:
        if msg.sender != self.peer_id:
            raise MessageError("a peer may only send messages in its own name")
        data = encode_message(msg)
        self.transport.send(self.peer_id, msg.recipient, data)
        self.meter.record(self.peer_id, msg.recipient, str(msg.msg_type), len(data))

    def publish(self, msg: Message) -> None:
        if msg.sender != self.peer_id:
            raise MessageError("a peer may only send messages in its own name")
        check_public(msg)
        data = encode_message(msg)
        self.transport.broadcast(self.peer_id, data)
        self.meter.record(self.peer_id, BROADCAST, str(msg.msg_type), len(data))

    def receive(self) -> list[Message]:
        out: list[Message] = []
        for claimed, data in self.transport.receive(self.peer_id):
            try:
                msg = decode_message(data, self.max_bytes)
                if msg.recipient == BROADCAST:
                    check_public(msg)
                elif msg.recipient != self.peer_id:
                    raise MessageError("message addressed to another peer")
                if msg.sender != claimed:
                    raise MessageError("header sender differs from the transport's sender")
            except MessageError as exc:
                self.rejections.append(Rejection(claimed, type(exc).__name__, str(exc)))
                log.warning("%s rejected a message from %s: %s", self.peer_id, claimed, exc)
                continue
            out.append(msg)
        return out
