"""Key material of a consortium: one long-term identity per peer and the roster that pins them.

A key directory holds, per peer, ``<name>.key`` (secret keys, mode 0600, see
:class:`~secure_pcft.crypto.identity.Identity`) and ``<name>.pub.json`` (its public identity), plus
``roster.json`` (every pinned public identity). The workflow of a real consortium:

1. every site runs ``secure-pcft keys new NAME --dir DIR`` (:func:`new_identity`) and hands its
   ``NAME.pub.json`` (or just the fingerprint, to check it) to the coordinator;
2. the coordinator collects the public files into one folder and runs ``secure-pcft keys roster
   DIR`` (:func:`write_roster`), then distributes ``roster.json``;
3. each site runs with its own key file and the roster.

A one-machine simulation holds every peer's identity (:class:`Consortium`): loaded from a key
directory, or generated in memory for the run (:meth:`Consortium.generate`), so that throw-away keys
never touch a disk.

Threats mitigated (threat_models/): impersonation of a peer (TM-03, pinned roster); theft or
substitution of key material at rest (TM-06: 0600 key files, public files carry no secret).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from secure_pcft import bounded_json
from secure_pcft.crypto.identity import Identity, PublicIdentity, validate_peer_name
from secure_pcft.crypto.roster import Roster
from secure_pcft.errors import ConfigError, CorruptFileError, CryptoError
from secure_pcft.fileio import write_text_atomic

ROSTER_FILE = "roster.json"
KEY_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub.json"
_MAX_PUBLIC_FILE_BYTES = 64 * 1024
_PUBLIC_FILE_LIMITS = bounded_json.JsonLimits(max_bytes=_MAX_PUBLIC_FILE_BYTES, max_depth=2)


def key_path(directory: str | os.PathLike[str], name: str) -> Path:
    """Path of ``name``'s secret key file in ``directory``."""
    return Path(directory) / f"{validate_peer_name(name)}{KEY_SUFFIX}"


def public_path(directory: str | os.PathLike[str], name: str) -> Path:
    """Path of ``name``'s public identity file in ``directory``."""
    return Path(directory) / f"{validate_peer_name(name)}{PUBLIC_SUFFIX}"


def _ensure_private_dir(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise CryptoError(f"key directory {directory}: cannot create ({exc.strerror})") from None


def new_identity(name: str, directory: str | os.PathLike[str]) -> PublicIdentity:
    """Generate a peer identity: ``<name>.key`` (0600, never overwritten) and ``<name>.pub.json``.

    Args:
        name: peer name (1-64 chars of ``[A-Za-z0-9_.-]``).
        directory: where the files go (created with mode 0700 if missing).

    Returns:
        The public identity (name, public keys, fingerprint) — nothing secret.

    Raises:
        ConfigError: malformed name.
        CryptoError: the key file already exists or cannot be written.
    """
    d = Path(directory)
    _ensure_private_dir(d)
    pub_file = public_path(d, name)
    if pub_file.exists():
        raise CryptoError(f"public file {pub_file}: already exists; refusing to overwrite")
    identity = Identity.generate(name)
    identity.save(key_path(d, name))
    _write_public(pub_file, identity.public())
    return identity.public()


def _write_public(path: Path, public: PublicIdentity) -> None:
    text = json.dumps(public.to_json_dict(), sort_keys=True, indent=2) + "\n"
    write_text_atomic(path, text)


def read_public(path: str | os.PathLike[str]) -> PublicIdentity:
    """Read a ``<name>.pub.json`` file.

    Raises:
        CorruptFileError: unreadable, oversize or malformed file.
        AuthenticationError: the fingerprint in the file does not match its keys.
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = fh.read(_MAX_PUBLIC_FILE_BYTES + 1)
    except OSError as exc:
        raise CorruptFileError(f"public file {p}: cannot read ({exc.strerror})") from None
    if len(data) > _MAX_PUBLIC_FILE_BYTES:
        raise CorruptFileError(f"public file {p}: larger than {_MAX_PUBLIC_FILE_BYTES} bytes")
    obj = bounded_json.loads(data, _PUBLIC_FILE_LIMITS, CorruptFileError, f"public file {p}")
    return PublicIdentity.from_json_dict(obj)


def write_roster(directory: str | os.PathLike[str]) -> Roster:
    """Pin every ``*.pub.json`` in ``directory`` into ``directory/roster.json`` and return it.

    Raises:
        ConfigError: no public files, a file name that differs from the peer name inside, or
            duplicate names/keys.
        CorruptFileError, AuthenticationError: a malformed public file.
    """
    d = Path(directory)
    files = sorted(d.glob(f"*{PUBLIC_SUFFIX}"))
    if not files:
        raise ConfigError(f"key directory {d}: no *{PUBLIC_SUFFIX} files to pin")
    peers = []
    for f in files:
        public = read_public(f)
        if f.name != f"{public.name}{PUBLIC_SUFFIX}":
            raise ConfigError(f"public file {f}: holds peer {public.name!r}; file name differs")
        peers.append(public)
    roster = Roster(peers)
    roster.save(d / ROSTER_FILE)
    return roster


class Consortium:
    """Every peer identity of a one-machine simulation, and the roster that pins them.

    Args:
        identities: peer name -> its secret identity.
        roster: the pinned public identities (may list more peers than ``identities``).

    Raises:
        UnknownPeerError: an identity is not on the roster.
        AuthenticationError: an identity's keys differ from its pin.
    """

    __slots__ = ("_identities", "roster")

    def __init__(self, identities: Mapping[str, Identity], roster: Roster) -> None:
        for name, identity in identities.items():
            if identity.name != name:
                raise ConfigError(f"consortium: identity {identity.name!r} filed as {name!r}")
            roster.verify(identity.public())
        self._identities = dict(identities)
        self.roster = roster

    @classmethod
    def generate(cls, names: Iterable[str]) -> Consortium:
        """Fresh in-memory identities (libsodium CSPRNG) and their roster; nothing is written."""
        identities = {name: Identity.generate(name) for name in names}
        return cls(identities, Roster(i.public() for i in identities.values()))

    @classmethod
    def create(cls, directory: str | os.PathLike[str], names: Iterable[str]) -> Consortium:
        """Write a key file and public file per name and the roster into ``directory``; load them.

        Raises:
            CryptoError: a key file already exists.
        """
        names = list(names)
        for name in names:
            new_identity(name, directory)
        write_roster(directory)
        return cls.load(directory, names)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], names: Iterable[str]) -> Consortium:
        """Load ``roster.json`` and ``<name>.key`` for every name from ``directory``.

        Raises:
            ConfigError: the roster or a key file is missing.
            InsecureKeyFileError: a key file is readable by group/others, a symlink, ...
            CorruptFileError, AuthenticationError: tampered files or keys that differ from the pins.
        """
        d = Path(directory)
        if not (d / ROSTER_FILE).is_file():
            raise ConfigError(f"[security] key_dir: {d} has no {ROSTER_FILE}")
        roster = Roster.load(d / ROSTER_FILE)
        identities = {}
        for name in names:
            path = key_path(d, name)
            if not path.exists():
                raise ConfigError(f"[security] key_dir: no key file for peer {name!r} ({path})")
            identities[name] = Identity.load(path)
        return cls(identities, roster)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._identities))

    def identity(self, name: str) -> Identity:
        """The secret identity of ``name``.

        Raises:
            ConfigError: this consortium holds no key for ``name``.
        """
        try:
            return self._identities[name]
        except KeyError:
            raise ConfigError(f"consortium: no key for peer {name!r}") from None

    def fingerprints(self) -> dict[str, str]:
        """Peer name -> fingerprint, for every identity held (public information)."""
        return {name: self._identities[name].fingerprint for name in self.names}

    def __repr__(self) -> str:
        return f"Consortium({len(self._identities)} identities, {self.roster!r})"
