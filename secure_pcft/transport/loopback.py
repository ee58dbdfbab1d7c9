"""In-process transport: one mailbox per peer (what is sent is counted by the channels' meter)."""

from __future__ import annotations

from secure_pcft.errors import UnknownPeerError


class LoopbackTransport:
    """Delivers bytes between peers of one process.

    The claimed sender is what a network would show (an address); it is *not* authenticated —
    authentication is the envelope layer's job.
    """

    def __init__(self, peer_ids: list[str] | tuple[str, ...]) -> None:
        self._boxes: dict[str, list[tuple[str, bytes]]] = {p: [] for p in peer_ids}

    def send(self, sender: str, recipient: str, data: bytes) -> None:
        if recipient not in self._boxes:
            raise UnknownPeerError(f"unknown recipient {recipient!r}")
        self._boxes[recipient].append((sender, bytes(data)))

    def broadcast(self, sender: str, data: bytes) -> None:
        """One upload; a copy lands in every other mailbox."""
        if sender not in self._boxes:
            raise UnknownPeerError(f"unknown sender {sender!r}")
        data = bytes(data)
        for peer, box in self._boxes.items():
            if peer != sender:
                box.append((sender, data))

    def receive(self, peer_id: str) -> list[tuple[str, bytes]]:
        if peer_id not in self._boxes:
            raise UnknownPeerError(f"unknown peer {peer_id!r}")
        items, self._boxes[peer_id] = self._boxes[peer_id], []
        return items

    def reset(self) -> None:
        """Empty every mailbox (a fresh run on the same peers)."""
        for box in self._boxes.values():
            box.clear()
