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
