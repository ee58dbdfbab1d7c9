"""In-process transport: one mailbox per peer, and byte counters per sender and round."""

from __future__ import annotations

from collections import defaultdict

from secure_pcft.errors import UnknownPeerError
from secure_pcft.transport.base import BROADCAST


class LoopbackTransport:
    """Delivers bytes between peers of one process and counts them.

    The claimed sender is what a network would show (an address); it is *not* authenticated —
    authentication is the envelope layer's job.
    """

    def __init__(self, peer_ids: list[str] | tuple[str, ...]) -> None:
        self._boxes: dict[str, list[tuple[str, bytes]]] = {p: [] for p in peer_ids}
        self.round = 0
        # bytes_sent[round][sender] and messages_sent[round][sender]
        self.bytes_sent: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.messages_sent: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        # edges[round][(sender, recipient)] = bytes; a broadcast is one edge to BROADCAST
        self.edges: dict[int, dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))

    def send(self, sender: str, recipient: str, data: bytes) -> None:
        if recipient not in self._boxes:
            raise UnknownPeerError(f"unknown recipient {recipient!r}")
        self._boxes[recipient].append((sender, bytes(data)))
        self.bytes_sent[self.round][sender] += len(data)
        self.messages_sent[self.round][sender] += 1
        self.edges[self.round][(sender, recipient)] += len(data)

    def broadcast(self, sender: str, data: bytes) -> None:
        """One upload, counted once for ``sender``; a copy lands in every other mailbox."""
        if sender not in self._boxes:
            raise UnknownPeerError(f"unknown sender {sender!r}")
        data = bytes(data)
        for peer, box in self._boxes.items():
            if peer != sender:
                box.append((sender, data))
        self.bytes_sent[self.round][sender] += len(data)
        self.messages_sent[self.round][sender] += 1
        self.edges[self.round][(sender, BROADCAST)] += len(data)

    def receive(self, peer_id: str) -> list[tuple[str, bytes]]:
        if peer_id not in self._boxes:
            raise UnknownPeerError(f"unknown peer {peer_id!r}")
        items, self._boxes[peer_id] = self._boxes[peer_id], []
        return items

    def reset(self) -> None:
        """Empty every mailbox and zero the counters (a fresh run on the same peers)."""
        for box in self._boxes.values():
            box.clear()
        self.round = 0
        self.bytes_sent.clear()
        self.messages_sent.clear()
        self.edges.clear()

    def round_bytes(self, rnd: int) -> dict[str, int]:
        """Bytes each peer sent in round ``rnd``."""
        return dict(self.bytes_sent.get(rnd, {}))

    def total_bytes(self) -> int:
        return sum(sum(v.values()) for v in self.bytes_sent.values())
