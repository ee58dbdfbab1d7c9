"""The transport seam: peers hand it bytes addressed to a peer id; it never interprets them."""

from __future__ import annotations

from typing import Protocol


class Transport(Protocol):
    """Moves opaque byte strings between peers."""

    def send(self, sender: str, recipient: str, data: bytes) -> None:
        """Queue ``data`` for ``recipient``. Raises UnknownPeerError for an unknown recipient."""
        ...

    def receive(self, peer_id: str) -> list[tuple[str, bytes]]:
        """Drain and return everything queued for ``peer_id`` as (claimed sender, bytes)."""
        ...
