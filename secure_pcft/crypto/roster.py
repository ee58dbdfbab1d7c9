"""The consortium roster: pinned public identities of every peer allowed to talk.

A roster is a JSON file (``{"format": "secure-pcft-roster", "version": 1, "peers": [...]}``) listing
each peer's name, base64 Ed25519/X25519 public keys and fingerprint. Loading recomputes every
fingerprint; a mismatch is an :class:`AuthenticationError` (someone edited a key but not its pin, or
the reverse). Anything not on the roster is rejected by name (:class:`UnknownPeerError`) or by key id.

Threats mitigated (threat_models/): a non-member injecting messages (TM-03); substitution of a
peer's public key (TM-06).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from secure_pcft import bounded_json
from secure_pcft.crypto.identity import PublicIdentity
from secure_pcft.errors import AuthenticationError, ConfigError, CorruptFileError, UnknownPeerError
from secure_pcft.fileio import write_bytes_atomic

_ROSTER_FORMAT = "secure-pcft-roster"
_ROSTER_VERSION = 1
_MAX_ROSTER_BYTES = 1024 * 1024
# Written by this toolkit: strict (no NaN, no duplicate keys), shallow (an object of a list of objects).
_ROSTER_LIMITS = bounded_json.JsonLimits(max_bytes=_MAX_ROSTER_BYTES, max_depth=4)


class Roster:
    """Immutable set of pinned :class:`PublicIdentity` records, indexed by name and by key id.

    Raises:
        ConfigError: duplicate names or duplicate keys.
    """

    __slots__ = ("_by_key_id", "_by_name")

    def __init__(self, peers: Iterable[PublicIdentity]) -> None:
        by_name: dict[str, PublicIdentity] = {}
        by_key_id: dict[bytes, PublicIdentity] = {}
        for peer in peers:
            if not isinstance(peer, PublicIdentity):
                raise ConfigError("roster: entries must be PublicIdentity records")
            if peer.name in by_name:
                raise ConfigError(f"roster: duplicate peer name {peer.name!r}")
            if peer.key_id in by_key_id:
                raise ConfigError(f"roster: peer {peer.name!r} reuses the keys of another peer")
            by_name[peer.name] = peer
            by_key_id[peer.key_id] = peer
        self._by_name = by_name
        self._by_key_id = by_key_id

    # ------------------------------------------------------------------ lookups
    def get(self, name: str) -> PublicIdentity:
        """Pinned identity of ``name``.

        Raises:
            UnknownPeerError: ``name`` is not on the roster.
        """
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownPeerError(f"peer {name!r} is not on the roster") from None

    def by_key_id(self, key_id: bytes) -> PublicIdentity:
        """Pinned identity whose 16-byte key id (raw fingerprint) is ``key_id``.

        Raises:
            UnknownPeerError: no pinned peer has that key id.
        """
        try:
            return self._by_key_id[key_id]
        except KeyError:
            raise UnknownPeerError(f"no roster peer has key id {key_id.hex()}") from None

    def verify(self, peer: PublicIdentity) -> PublicIdentity:
        """Check that a presented identity is exactly the pinned one; return the pinned record.

        Raises:
            UnknownPeerError: the name is not on the roster.
            AuthenticationError: the keys/fingerprint differ from what is pinned.
        """
        pinned = self.get(peer.name)
        if pinned != peer:
            raise AuthenticationError(
                f"peer {peer.name!r}: presented fingerprint {peer.fingerprint} != pinned "
                f"{pinned.fingerprint}"
            )
        return pinned

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._by_name))

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[PublicIdentity]:
        return iter(self._by_name[n] for n in self.names)

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"Roster({', '.join(f'{p.name}:{p.fingerprint[:8]}' for p in self)})"

    # ------------------------------------------------------------------ files
    def to_json_bytes(self) -> bytes:
        body = {
            "format": _ROSTER_FORMAT,
            "version": _ROSTER_VERSION,
            "peers": [p.to_json_dict() for p in self],
        }
        return json.dumps(body, sort_keys=True, indent=2).encode("utf-8") + b"\n"

    @classmethod
    def from_json_bytes(cls, data: bytes, source: str = "roster") -> Roster:
        """Parse roster JSON.

        Raises:
            CorruptFileError: malformed JSON or entries.
            AuthenticationError: an entry's fingerprint does not match its keys.
            ConfigError: duplicate names/keys.
        """
        if len(data) > _MAX_ROSTER_BYTES:
            raise CorruptFileError(f"{source}: larger than {_MAX_ROSTER_BYTES} bytes")
        obj = bounded_json.loads(data, _ROSTER_LIMITS, CorruptFileError, str(source))
        if not isinstance(obj, dict) or set(obj) != {"format", "version", "peers"}:
            raise CorruptFileError(f"{source}: expected the fields format, version, peers")
        if obj["format"] != _ROSTER_FORMAT or obj["version"] != _ROSTER_VERSION:
            raise CorruptFileError(f"{source}: unsupported format/version")
        if not isinstance(obj["peers"], list):
            raise CorruptFileError(f"{source}: peers must be a list")
        return cls(PublicIdentity.from_json_dict(entry) for entry in obj["peers"])

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Roster:
        """Load a roster file (see :meth:`from_json_bytes` for the errors raised)."""
        p = Path(path)
        try:
            with p.open("rb") as fh:
                data = fh.read(_MAX_ROSTER_BYTES + 1)
        except OSError as exc:
            raise CorruptFileError(f"roster {p}: cannot read ({exc.strerror})") from None
        return cls.from_json_bytes(data, source=f"roster {p}")

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the roster atomically (temp file + fsync + rename). It holds only public keys."""
        write_bytes_atomic(Path(path), self.to_json_bytes())
