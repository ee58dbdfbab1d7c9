"""Long-term peer identities: an Ed25519 signing key and an X25519 box key (PyNaCl).

A peer's secret keys live in one JSON key file (base64 keys) created with ``O_EXCL`` and mode
``0600``; a key file that group or others may access is refused, as ssh refuses such a key. Secret
keys never appear in ``repr``/``str``, logs or error messages, and :class:`Identity` refuses to be
pickled. Peers know each other by a *fingerprint*: a short hex digest of SHA-256 over both public
keys, pinned in the roster (:mod:`secure_pcft.crypto.roster`).

Threats mitigated (threat_models/): impersonation of a peer by a network attacker (TM-03); theft
of key material at rest on a compromised site (TM-06).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from nacl.public import Box, PrivateKey, PublicKey
from nacl.signing import SigningKey

from secure_pcft import bounded_json
from secure_pcft.errors import (
    AuthenticationError,
    ConfigError,
    CorruptFileError,
    CryptoError,
    InsecureKeyFileError,
)

KEY_BYTES = 32
FINGERPRINT_BYTES = 16  # 128-bit truncation of SHA-256: second-preimage resistance 2^128
_FINGERPRINT_DOMAIN = b"secure-pcft/fingerprint/v1\x00"
_KEY_FILE_FORMAT = "secure-pcft-identity"
_KEY_FILE_VERSION = 1
_MAX_KEY_FILE_BYTES = 64 * 1024
_KEY_FILE_LIMITS = bounded_json.JsonLimits(max_bytes=_MAX_KEY_FILE_BYTES, max_depth=2)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")


def validate_peer_name(name: object) -> str:
    """Return ``name`` if it is a valid peer name (1-64 chars of ``[A-Za-z0-9_.-]``).

    Raises:
        ConfigError: the name is not a string of that form.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ConfigError(f"peer name {name!r}: must match {_NAME_RE.pattern}")
    return name


def fingerprint_of(sign_pk: bytes, box_pk: bytes) -> str:
    """Fingerprint of a peer: hex of the first 16 bytes of SHA-256(domain ‖ sign_pk ‖ box_pk)."""
    digest = hashlib.sha256(_FINGERPRINT_DOMAIN + sign_pk + box_pk).digest()
    return digest[:FINGERPRINT_BYTES].hex()


def b64decode_key(value: object, what: str) -> bytes:
    """Decode a strict base64 32-byte key; raises CorruptFileError naming ``what`` (never the value)."""
    if not isinstance(value, str):
        raise CorruptFileError(f"{what}: expected a base64 string")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise CorruptFileError(f"{what}: not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise CorruptFileError(f"{what}: expected {KEY_BYTES} bytes, got {len(raw)}")
    return raw


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class PublicIdentity:
    """What the consortium pins about a peer: its name, public keys and fingerprint.

    Attributes:
        name: peer name (1-64 chars of ``[A-Za-z0-9_.-]``).
        sign_pk: Ed25519 verify key, 32 bytes.
        box_pk: X25519 public key, 32 bytes.
        fingerprint: :func:`fingerprint_of` the two keys (32 hex chars).

    Raises:
        ConfigError: malformed name or key lengths.
        AuthenticationError: ``fingerprint`` does not match the keys.
    """

    name: str
    sign_pk: bytes
    box_pk: bytes
    fingerprint: str

    def __post_init__(self) -> None:
        validate_peer_name(self.name)
        for field_name in ("sign_pk", "box_pk"):
            value = getattr(self, field_name)
            if not isinstance(value, bytes) or len(value) != KEY_BYTES:
                raise ConfigError(f"peer {self.name}: {field_name} must be {KEY_BYTES} bytes")
        if fingerprint_of(self.sign_pk, self.box_pk) != self.fingerprint:
            raise AuthenticationError(
                f"peer {self.name}: fingerprint {self.fingerprint!r} does not match its public keys"
            )

    @classmethod
    def from_keys(cls, name: str, sign_pk: bytes, box_pk: bytes) -> PublicIdentity:
        """Build a public identity, computing its fingerprint."""
        return cls(name, sign_pk, box_pk, fingerprint_of(sign_pk, box_pk))

    @property
    def key_id(self) -> bytes:
        """The fingerprint as 16 raw bytes (the sender id carried in envelope prefixes)."""
        return bytes.fromhex(self.fingerprint)

    def to_json_dict(self) -> dict[str, str]:
        """JSON-ready dict (base64 keys, hex fingerprint)."""
        return {
            "name": self.name,
            "sign_pk": _b64(self.sign_pk),
            "box_pk": _b64(self.box_pk),
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_json_dict(cls, obj: object) -> PublicIdentity:
        """Parse :meth:`to_json_dict` output.

        Raises:
            CorruptFileError: missing/extra fields or undecodable keys.
            AuthenticationError: the fingerprint does not match the keys.
        """
        expected = {"name", "sign_pk", "box_pk", "fingerprint"}
        if not isinstance(obj, dict) or set(obj) != expected:
            raise CorruptFileError(
                f"public identity: expected exactly the fields {sorted(expected)}"
            )
        name, fingerprint = obj["name"], obj["fingerprint"]
        if not isinstance(name, str) or not isinstance(fingerprint, str):
            raise CorruptFileError("public identity: name and fingerprint must be strings")
        try:
            validate_peer_name(name)
        except ConfigError as exc:
            raise CorruptFileError(str(exc)) from None
        sign_pk = b64decode_key(obj["sign_pk"], f"peer {name}: sign_pk")
        box_pk = b64decode_key(obj["box_pk"], f"peer {name}: box_pk")
        return cls(name, sign_pk, box_pk, fingerprint)


class Identity:
    """A peer's long-term secret keys (Ed25519 signing + X25519 box). Never printed, never pickled.

    Build with :meth:`generate` or :meth:`load`; share only :meth:`public`.
    """

    __slots__ = ("_box_key", "_name", "_public", "_signing_key")

    def __init__(self, name: str, signing_key: SigningKey, box_key: PrivateKey) -> None:
        self._name = validate_peer_name(name)
        self._signing_key = signing_key
        self._box_key = box_key
        self._public = PublicIdentity.from_keys(
            name, bytes(signing_key.verify_key), bytes(box_key.public_key)
        )

    @classmethod
    def generate(cls, name: str) -> Identity:
        """Fresh identity with keys from libsodium's CSPRNG."""
        return cls(name, SigningKey.generate(), PrivateKey.generate())

    @property
    def name(self) -> str:
        return self._name

    @property
    def fingerprint(self) -> str:
        return self._public.fingerprint

    def public(self) -> PublicIdentity:
        """The public half, to pin in the consortium roster."""
        return self._public

    def sign(self, message: bytes) -> bytes:
        """Detached Ed25519 signature (64 bytes) over ``message``."""
        return bytes(self._signing_key.sign(message).signature)

    def box_for(self, peer: PublicIdentity) -> Box:
        """The X25519 Box shared between this identity and ``peer`` (keys stay inside PyNaCl)."""
        return Box(self._box_key, PublicKey(peer.box_pk))

    def __repr__(self) -> str:
        return f"Identity(name={self._name!r}, fingerprint={self.fingerprint!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("Identity holds secret keys and cannot be pickled or copied")

    # ------------------------------------------------------------------ key file
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key file: JSON with base64 keys, created ``O_EXCL`` with mode 0600 and fsync'd.

        Raises:
            CryptoError: the file already exists (never overwritten) or cannot be created.
        """
        body: dict[str, Any] = {
            "format": _KEY_FILE_FORMAT,
            "version": _KEY_FILE_VERSION,
            "name": self._name,
            "fingerprint": self.fingerprint,
            "sign_sk": _b64(bytes(self._signing_key)),
            "box_sk": _b64(bytes(self._box_key)),
        }
        data = json.dumps(body, sort_keys=True, indent=2).encode("utf-8") + b"\n"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            raise CryptoError(f"key file {path}: already exists; refusing to overwrite") from None
        except OSError as exc:
            raise CryptoError(f"key file {path}: cannot create ({exc.strerror})") from None
        try:
            if os.name == "posix":
                os.fchmod(fd, 0o600)  # umask can only narrow; make the mode explicit anyway
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Identity:
        """Read a key file written by :meth:`save`.

        Raises:
            InsecureKeyFileError: not a regular file, a symlink, not owned by us, or any group/other
                permission bit set.
            CorruptFileError: unreadable JSON, wrong format, bad keys or fingerprint mismatch.
        """
        raw = _read_private_file(Path(path))
        obj = bounded_json.loads(raw, _KEY_FILE_LIMITS, CorruptFileError, f"key file {path}")
        expected = {"format", "version", "name", "fingerprint", "sign_sk", "box_sk"}
        if not isinstance(obj, dict) or set(obj) != expected:
            raise CorruptFileError(
                f"key file {path}: expected exactly the fields {sorted(expected)}"
            )
        if obj["format"] != _KEY_FILE_FORMAT or obj["version"] != _KEY_FILE_VERSION:
            raise CorruptFileError(f"key file {path}: unsupported format/version")
        sign_seed = b64decode_key(obj["sign_sk"], f"key file {path}: sign_sk")
        box_sk = b64decode_key(obj["box_sk"], f"key file {path}: box_sk")
        try:
            identity = cls(obj["name"], SigningKey(sign_seed), PrivateKey(box_sk))
        except ConfigError as exc:
            raise CorruptFileError(f"key file {path}: {exc}") from None
        if identity.fingerprint != obj["fingerprint"]:
            raise CorruptFileError(f"key file {path}: stored fingerprint does not match the keys")
        return identity


def _read_private_file(path: Path) -> bytes:
    """Open without following symlinks, check type/owner/mode on the open descriptor, then read."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise CryptoError(f"key file {path}: not found") from None
    except OSError as exc:
        # ELOOP: the path is a symlink (O_NOFOLLOW); anything else: unreadable.
        raise InsecureKeyFileError(
            f"key file {path}: cannot open safely ({exc.strerror})"
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InsecureKeyFileError(f"key file {path}: not a regular file")
        if os.name == "posix":
            if st.st_mode & 0o077:
                raise InsecureKeyFileError(
                    f"key file {path}: mode {stat.S_IMODE(st.st_mode):04o} gives group/others "
                    "access; run `chmod 600` on it"
                )
            if st.st_uid != os.geteuid():
                raise InsecureKeyFileError(f"key file {path}: not owned by the current user")
        if st.st_size > _MAX_KEY_FILE_BYTES:
            raise CorruptFileError(f"key file {path}: larger than {_MAX_KEY_FILE_BYTES} bytes")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(_MAX_KEY_FILE_BYTES + 1)
    finally:
        os.close(fd)
