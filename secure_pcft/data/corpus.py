"""The data of a run: each peer's private splits and the public reference set."""

from __future__ import annotations

from dataclasses import dataclass, field

from secure_pcft.errors import DataError


@dataclass(frozen=True)
class PeerCorpus:
    """One peer's private text, already split.

    Attributes:
        peer_id: stable, human-readable id (``peer-0``, ``plant-berlin``...).
        train, val, test: documents (sentences, articles, records) — private to the peer.
        domain_mix: the known proportions of each domain in this peer's data (sums to 1), used by
            the ``oracle`` strategy and by reports; empty when unknown (user files).
        subject_of: the data subject of each document (document text → subject id), for
            ``[privacy] unit = "subject"``; empty when the data names no subjects.
    """

    peer_id: str
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    domain_mix: dict[str, float] = field(default_factory=dict)
    subject_of: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.peer_id:
            raise DataError("peer_id must be non-empty")
        for name in ("train", "val", "test"):
            if not getattr(self, name):
                raise DataError(f"peer {self.peer_id}: the {name} split is empty")
        if self.domain_mix:
            total = sum(self.domain_mix.values())
            if abs(total - 1.0) > 1e-6 or min(self.domain_mix.values()) < 0:
                raise DataError(f"peer {self.peer_id}: domain_mix must be proportions summing to 1")

    def subjects(self, split: str) -> tuple[str, ...]:
        """The subject of each document of ``split`` (``train``/``val``/``test``), in order.

        Raises:
            DataError: the data names no subject for some document of the split (the message
                counts them, never shows the text).
        """
        docs: tuple[str, ...] = getattr(self, split)
        missing = sum(doc not in self.subject_of for doc in docs)
        if missing:
            raise DataError(
                f"peer {self.peer_id}: {missing} of {len(docs)} {split} documents name no data "
                "subject; [privacy] unit = 'subject' needs one for every document ([data] "
                "subject_field for .jsonl/.csv files, or the embedded corpus)"
            )
        return tuple(self.subject_of[doc] for doc in docs)


@dataclass(frozen=True)
class Federation:
    """Everything a run's peers hold, plus the public reference set nobody owns.

    Attributes:
        peers: one corpus per peer, in peer order.
        reference: public reference documents (disjoint from every peer's data).
        domains: names of the domains that ``domain_mix`` refers to.
        description: one line for logs and reports (setting name, sizes, license note).
    """

    peers: tuple[PeerCorpus, ...]
    reference: tuple[str, ...]
    domains: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if len(self.peers) < 1:
            raise DataError("a federation needs at least one peer")
        ids = [p.peer_id for p in self.peers]
        if len(set(ids)) != len(ids):
            raise DataError("peer ids must be unique")
        if not self.reference:
            raise DataError("the public reference set is empty")

    @property
    def peer_ids(self) -> tuple[str, ...]:
        return tuple(p.peer_id for p in self.peers)
