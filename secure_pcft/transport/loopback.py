"""In-process transport: one mailbox per peer (what is sent is counted by the channels' meter)."""

from __future__ import annotations

from secure_pcft.errors import UnknownPeerError


class LoopbackTransport:
    """Delivers bytes between peers of one process.

    The claimed sender is what a network would show (an address); it is *not* authenticated —
    authentication is the envelope layer's job.

    Args:
        peer_ids: the peers (one mailbox each).
        staged: hold what is sent until :meth:`deliver`, as a relay does between the steps of a
            round (the simulation's step barrier); otherwise deliver at once.
    """

    def __init__(self, peer_ids: list[str] | tuple[str, ...], *, staged: bool = False) -> None:
        self._boxes: dict[str, list[tuple[str, bytes]]] = {p: [] for p in peer_ids}
        self._staged: list[tuple[str, str, bytes]] | None = [] if staged else None

    def send(self, sender: str, recipient: str, data: bytes) -> None:
        if recipient not in self._boxes:
            raise UnknownPeerError(f"unknown recipient {recipient!r}")
        self._put(sender, recipient, bytes(data))

    def broadcast(self, sender: str, data: bytes) -> None:
        """One upload; a copy lands in every other mailbox."""
        if sender not in self._boxes:
            raise UnknownPeerError(f"unknown sender {sender!r}")
        data = bytes(data)
        for peer in self._boxes:
            if peer != sender:
                self._put(sender, peer, data)

    def deliver(self) -> None:
        """Move everything staged into the mailboxes, in sending order (no-op when not staged)."""
        if self._staged:
            for sender, recipient, data in self._staged:
                self._boxes[recipient].append((sender, data))
            self._staged.clear()

    def _put(self, sender: str, recipient: str, data: bytes) -> None:
        if self._staged is None:
            self._boxes[recipient].append((sender, data))
        else:
            self._staged.append((sender, recipient, data))

    def receive(self, peer_id: str) -> list[tuple[str, bytes]]:
        if peer_id not in self._boxes:
            raise UnknownPeerError(f"unknown peer {peer_id!r}")
        items, self._boxes[peer_id] = self._boxes[peer_id], []
        return items

    def reset(self) -> None:
        """Empty every mailbox and the stage (a fresh run on the same peers)."""
        for box in self._boxes.values():
            box.clear()
        if self._staged is not None:
            self._staged.clear()
