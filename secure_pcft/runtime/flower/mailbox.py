"""A peer's transport when a relay moves its bytes: an outbox filled during a step, an inbox
filled by the relay before the next one.

It satisfies :class:`~secure_pcft.transport.base.Transport`, so the peer's channel (plain or
secure) and the protocol phases run unchanged; the channel's traffic meter counts what is sent, as
in the loopback simulation.
"""

from __future__ import annotations

from secure_pcft.errors import UnknownPeerError
from secure_pcft.transport.base import BROADCAST


class RelayMailbox:
    """One peer's end of a relay.

    Args:
        peer_id: the peer this mailbox belongs to.
        peer_ids: every peer of the run (recipients outside it are refused).
    """

    def __init__(self, peer_id: str, peer_ids: tuple[str, ...]) -> None:
        self.peer_id = peer_id
        self._peers = frozenset(peer_ids)
        self._inbox: list[tuple[str, bytes]] = []
        self._outbox: list[tuple[str, bytes]] = []

    # ---- Transport protocol -------------------------------------------------------------------
    def send(self, sender: str, recipient: str, data: bytes) -> None:
        if sender != self.peer_id:
            raise UnknownPeerError(f"mailbox of {self.peer_id!r} cannot send for {sender!r}")
        if recipient not in self._peers or recipient == self.peer_id:
            raise UnknownPeerError(f"unknown recipient {recipient!r}")
        self._outbox.append((recipient, bytes(data)))

    def broadcast(self, sender: str, data: bytes) -> None:
        """One upload addressed to every peer; the relay fans it out."""
        if sender != self.peer_id:
            raise UnknownPeerError(f"mailbox of {self.peer_id!r} cannot send for {sender!r}")
        self._outbox.append((BROADCAST, bytes(data)))

    def receive(self, peer_id: str) -> list[tuple[str, bytes]]:
        if peer_id != self.peer_id:
            raise UnknownPeerError(f"mailbox of {self.peer_id!r} holds nothing for {peer_id!r}")
        items, self._inbox = self._inbox, []
        return items

    # ---- relay side ---------------------------------------------------------------------------
    def deliver(self, items: list[tuple[str, bytes]]) -> None:
        """Put what the relay forwarded (claimed sender, bytes) into the inbox."""
        self._inbox.extend(items)

    def take_outbox(self) -> list[tuple[str, bytes]]:
        """Everything sent since the last call, as (recipient, bytes), in sending order; the
        recipient of a broadcast is ``BROADCAST``."""
        items, self._outbox = self._outbox, []
        return items
