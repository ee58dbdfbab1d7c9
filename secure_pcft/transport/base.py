"""The transport seam: peers hand it bytes addressed to a peer id; it never interprets them."""

from __future__ import annotations

from typing import Protocol

BROADCAST = "*"  # recipient of a public message: every peer of the run but its sender


class Transport(Protocol):
    """Moves opaque byte strings between peers."""

    def send(self, sender: str, recipient: str, data: bytes) -> None:
        """Queue ``data`` for ``recipient``. Raises UnknownPeerError for an unknown recipient."""
        ...

    def broadcast(self, sender: str, data: bytes) -> None:
        """Queue one copy of ``data`` for every other peer: uploaded once, fanned out by the
        transport (a relay), so the sender's traffic is one message whatever the run's size."""
        ...

    def receive(self, peer_id: str) -> list[tuple[str, bytes]]:
        """Drain and return everything queued for ``peer_id`` as (claimed sender, bytes)."""
        ...


class StagedTransport(Transport, Protocol):
    """A transport that holds a round's step until every peer ran it, as a relay does: what is sent
    is delivered by :meth:`deliver` (the step barrier) and a fresh run starts from :meth:`reset`.
    The loopback simulation drives one; a Flower deployment's relay plays this part."""

    def deliver(self) -> None:
        """Move everything sent since the last barrier into the recipients' mailboxes."""
        ...

    def reset(self) -> None:
        """Drop everything queued or staged (a fresh run on the same peers)."""
        ...
