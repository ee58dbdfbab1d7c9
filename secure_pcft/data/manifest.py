"""Which documents trained each peer: per-split SHA-256 manifests an auditor can match against.

A run writes ``<output>/manifests/<peer>.json``: for each split (``train``, ``val``, ``test``) the
SHA-256 of every document (its UTF-8 text exactly as the peer read it), in order. An auditor who
holds candidate documents hashes them and so forms member (``train``) and non-member (``test``,
or documents in no manifest) sets for a membership-inference audit of the released adapters,
without the manifest holding any text.

The manifests stay with the peer's own output (mode 0600), like its data: a hash of a short or
guessable document confirms a guess, which is exactly a membership test. Never send them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from secure_pcft.data.corpus import Federation, PeerCorpus
from secure_pcft.fileio import write_json_atomic
from secure_pcft.privacy.events import check_peer_id

MANIFEST_FORMAT = "secure-pcft-manifest/1"


def document_hash(text: str) -> str:
    """The manifest's identity of a document: SHA-256 of its UTF-8 text, hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def peer_manifest(peer: PeerCorpus) -> dict[str, Any]:
    return {
        "format": MANIFEST_FORMAT,
        "peer_id": peer.peer_id,
        "hash": "sha256(utf-8 text)",
        "splits": {
            name: [document_hash(d) for d in getattr(peer, name)]
            for name in ("train", "val", "test")
        },
    }


def write_manifests(federation: Federation, directory: Path) -> list[Path]:
    """One manifest per peer under ``directory`` (created), each written atomically with mode 0600."""
    return [
        write_json_atomic(
            directory / f"{check_peer_id(p.peer_id)}.json", peer_manifest(p), indent=1, mode=0o600
        )
        for p in federation.peers
    ]
