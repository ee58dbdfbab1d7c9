"""Sealed, signed envelopes: the only way bytes travel between peers.

Wire format (all integers big-endian)::

    offset      size  field
    0           4     magic b"SPCF" (sealed) or b"SPCP" (public, see below)
    4           1     wire version (2)
    5           16    sender key id = raw 16-byte fingerprint of the sender
    21          4     H = header length (u32, 2..1024)
    25          4     C = ciphertext length (u32, >= 40; public: body length)
    29          H     header: canonical JSON (sorted keys, no spaces, ASCII)
    29+H        C     ciphertext: nacl Box(sender X25519 sk, recipient X25519 pk), 24-byte nonce ‖ MAC ‖ ct
    29+H+C      64    Ed25519 signature by the sender over
                      SIGNATURE_CONTEXT ‖ bytes [0, 29+H) ‖ SHA-256(ciphertext)

Version 2 signs a SHA-256 digest of the ciphertext instead of the ciphertext itself. Ed25519 hashes
its whole message twice with SHA-512 (once for the nonce, once for the challenge), so signing the
ciphertext made every body byte pass SHA-512 twice at the sender and once more at the receiver —
about half of a large message's channel time. Now the body is hashed once per side with SHA-256
(hardware-accelerated where the CPU has SHA extensions), and Ed25519 signs ~100 bytes. The binding
is unchanged up to SHA-256's collision resistance (128-bit): whoever holds the roster (a peer, a
relay) still authenticates the header and the exact ciphertext before decrypting anything.
``SIGNATURE_CONTEXT`` separates these signatures from any other use of the signing key. Version 1
envelopes are refused with :class:`~secure_pcft.errors.WireVersionError`.

Header fields: ``v`` (protocol version), ``sender``, ``recipient``, ``round``, ``msg_type``, ``seq``
(one counter per sender over all its envelopes, strictly increasing; the receiver accepts each one
once), ``ts_ms`` (sender clock, ms since the epoch), ``body_len`` (plaintext bytes).

**Public envelopes** (magic ``b"SPCP"``, recipient ``"*"``): the same framing, header and checks,
but the body travels in clear and is signed as ``PUBLIC_SIGNATURE_CONTEXT ‖ prefix ‖ header ‖
SHA-256(body)``. They carry what every peer may read and a relay may see — a peer's public CKKS
context — so it is uploaded once and fanned out, instead of sealed N − 1 times. Authenticity,
freshness and replay protection are those of a sealed envelope (a relay cannot forge, alter or
replay one); there is no confidentiality, and the magic and signature context differ, so a public
envelope can never be taken for a sealed one or the other way round. Which message types may
travel in public is the channel's rule (:mod:`secure_pcft.collab.secure_channel`), checked when
sending and when receiving.

Why Box *and* a signature: the Ed25519 signature (over prefix, header and ciphertext) lets the
receiver, and any relay holding the roster, authenticate the cleartext header before touching the
ciphertext. The Box binds the ciphertext to the (sender, recipient) X25519 pair, so a roster member
who strips a signature and re-signs someone else's ciphertext as its own cannot make it decrypt
(identity misbinding). SealedBox (ephemeral sender key) would give sender-side forward secrecy but
lose that binding; with Box, a stolen X25519 key of either party exposes their past traffic.

The receiver (:class:`Inbox`) checks, in this order: lengths/limits → sender pinned →
signature → header → recipient → timestamp skew → round window → sequence → decryption. Nothing
but lengths is parsed before the signature verifies (the header then within bounded JSON limits),
and nothing is decrypted before every header check passes. Every rejection raises a typed
:class:`MessageError` and logs who and why, never the body.

Timestamps and sequence numbers follow the rule of :mod:`secure_pcft.crypto.replay`: a timestamp
more than ``max_clock_skew_s`` ahead of the local clock, or older than the window, is refused at the
door; each sequence number is accepted once while its timestamp is inside the window; no per-sender
watermark exists, so a future-dated message (refused or accepted) cannot make that sender's later,
normally stamped messages look old.

Threats mitigated (threat_models/): impersonation, injection, replay and tampering by a network
attacker (TM-03; reordered envelopes inside the window are each accepted once, not refused); an
eavesdropping or forging relay (TM-04); oversize or malformed input
from a roster member (TM-02).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nacl.exceptions import BadSignatureError as _NaclBadSignature
from nacl.exceptions import CryptoError as _NaclCryptoError
from nacl.public import Box
from nacl.signing import VerifyKey

from secure_pcft import bounded_json
from secure_pcft.crypto.identity import Identity, PublicIdentity
from secure_pcft.crypto.replay import AnchoredClock, ReplayWindow
from secure_pcft.crypto.roster import Roster
from secure_pcft.errors import (
    AuthenticationError,
    BadSignatureError,
    BodyDecryptionError,
    ConfigError,
    MessageError,
    OversizeMessageError,
    ReplayError,
    RoundWindowError,
    UnknownPeerError,
    UnknownSenderError,
    WireVersionError,
    WrongRecipientError,
)
from secure_pcft.transport.base import BROADCAST

logger = logging.getLogger(__name__)

WIRE_MAGIC = b"SPCF"
PUBLIC_MAGIC = b"SPCP"
WIRE_VERSION = 2
SIGNATURE_CONTEXT = b"secure-pcft envelope v2\x00"
PUBLIC_SIGNATURE_CONTEXT = b"secure-pcft public envelope v2\x00"
PREFIX = struct.Struct(">4sB16sII")  # magic, version, sender key id, H, C
SIGNATURE_BYTES = 64
BOX_OVERHEAD = 40  # 24-byte nonce + 16-byte Poly1305 tag
MAX_HEADER_BYTES = 1024
# A flat object of eight scalar fields; integers below 2^63 have at most 19 digits.
_HEADER_LIMITS = bounded_json.JsonLimits(
    max_bytes=MAX_HEADER_BYTES, max_depth=1, max_number_chars=20
)
_MAX_U63 = (1 << 63) - 1
_HEADER_FIELDS = ("body_len", "msg_type", "recipient", "round", "sender", "seq", "ts_ms", "v")
_MSG_TYPE_RE = re.compile(r"[a-z][a-z0-9_.\-]{0,63}")

Clock = Callable[[], float]


def signed_bytes(
    prefix_and_header: bytes | memoryview,
    ciphertext: bytes | memoryview,
    context: bytes = SIGNATURE_CONTEXT,
) -> bytes:
    """What the sender's Ed25519 key signs: context ‖ prefix ‖ header ‖ SHA-256(ciphertext or,
    for a public envelope, the clear body)."""
    return b"".join((context, prefix_and_header, hashlib.sha256(ciphertext).digest()))


@dataclass(frozen=True)
class EnvelopeHeader:
    """The signed, cleartext header of an envelope (seen by relays; holds no secrets)."""

    sender: str
    recipient: str
    round: int
    msg_type: str
    seq: int
    ts_ms: int
    body_len: int
    v: int = WIRE_VERSION

    def to_bytes(self) -> bytes:
        """Canonical JSON: sorted keys, no whitespace, ASCII only."""
        obj = {name: getattr(self, name) for name in _HEADER_FIELDS}
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> EnvelopeHeader:
        """Strict parse: exact field set, exact types, canonical encoding.

        Raises:
            MessageError: anything else.
        """
        if not raw.isascii():
            raise MessageError("header is not ASCII JSON")
        obj = bounded_json.loads(raw, _HEADER_LIMITS, MessageError, "header")
        if not isinstance(obj, dict) or tuple(sorted(obj)) != _HEADER_FIELDS:
            raise MessageError(f"header must have exactly the fields {list(_HEADER_FIELDS)}")
        ints = ("body_len", "round", "seq", "ts_ms", "v")
        for name in ints:
            value = obj[name]
            if type(value) is not int or not 0 <= value <= _MAX_U63:
                raise MessageError(f"header field {name} must be an integer in [0, 2^63)")
        for name in ("sender", "recipient", "msg_type"):
            if not isinstance(obj[name], str):
                raise MessageError(f"header field {name} must be a string")
        if not _MSG_TYPE_RE.fullmatch(obj["msg_type"]):
            raise MessageError("header field msg_type is not a valid message type")
        header = cls(**obj)
        if header.to_bytes() != raw:
            raise MessageError("header is not canonically encoded")
        return header


@dataclass(frozen=True)
class OpenedMessage:
    """A verified, decrypted message. ``body`` is kept out of ``repr`` so it cannot leak into logs."""

    sender: str
    msg_type: str
    round: int
    seq: int
    sent_at: float  # seconds since the epoch, sender's clock
    body: bytes = field(repr=False)
    recipient: str = ""  # this peer, or BROADCAST for a public envelope

    @property
    def public(self) -> bool:
        """Whether it came in a public (signed, unencrypted) envelope."""
        return self.recipient == BROADCAST


class _BoxCache:
    """The X25519 Box with each peer, computed once per peer key instead of once per message."""

    def __init__(self, identity: Identity) -> None:
        self._identity = identity
        self._boxes: dict[tuple[str, bytes], Box] = {}

    def __call__(self, peer: PublicIdentity) -> Box:
        key = (peer.name, peer.box_pk)
        box = self._boxes.get(key)
        if box is None:
            box = self._boxes[key] = self._identity.box_for(peer)
        return box


class Sealer:
    """Seals messages from one identity; one strictly increasing sequence over all its envelopes.

    Sequence numbers start from the sender's clock in microseconds and then increase by at least
    one per message, so they keep increasing across restarts of the sender (as long as its clock
    does not run backwards) without any persisted state. One counter for every recipient and for
    public envelopes alike, so no two envelopes a receiver gets from one sender share a number.

    Args:
        identity: the sender's secret keys.
        clock: seconds since the epoch (injectable for tests).
    """

    def __init__(self, identity: Identity, *, clock: Clock = time.time) -> None:
        self._identity = identity
        self._key_id = identity.public().key_id
        self._clock = clock
        self._last_seq = 0
        self._box = _BoxCache(identity)

    def seal(self, recipient: PublicIdentity, msg_type: str, round: int, body: bytes) -> bytes:
        """Encrypt ``body`` to ``recipient``, sign, and return the wire bytes.

        Raises:
            ConfigError: malformed message type, negative round or non-bytes body.
        """
        body = self._checked(msg_type, round, body)
        box = self._box(recipient)
        return self._frame(WIRE_MAGIC, SIGNATURE_CONTEXT, recipient.name, msg_type, round,
                           len(body), box.encrypt(body))  # fmt: skip

    def seal_public(self, msg_type: str, round: int, body: bytes) -> bytes:
        """Sign ``body`` for every peer (recipient ``"*"``), unencrypted; return the wire bytes.

        Only for what any peer and the relay may read (a public key): see the module docstring.

        Raises:
            ConfigError: malformed message type, negative round or non-bytes body.
        """
        body = self._checked(msg_type, round, body)
        return self._frame(
            PUBLIC_MAGIC, PUBLIC_SIGNATURE_CONTEXT, BROADCAST, msg_type, round, len(body), body
        )

    @staticmethod
    def _checked(msg_type: str, round: int, body: bytes) -> bytes:
        if not isinstance(msg_type, str) or not _MSG_TYPE_RE.fullmatch(msg_type):
            raise ConfigError(f"msg_type {msg_type!r}: must match {_MSG_TYPE_RE.pattern}")
        if type(round) is not int or not 0 <= round <= _MAX_U63:
            raise ConfigError(f"round {round!r}: must be a non-negative integer")
        if not isinstance(body, bytes | bytearray | memoryview):
            raise ConfigError("body: must be bytes (safetensors or JSON), never objects")
        return bytes(body)

    def _frame(
        self,
        magic: bytes,
        context: bytes,
        recipient: str,
        msg_type: str,
        round: int,
        body_len: int,
        payload: bytes,
    ) -> bytes:
        now = self._clock()
        self._last_seq = seq = max(self._last_seq + 1, int(now * 1_000_000))
        header = EnvelopeHeader(
            sender=self._identity.name,
            recipient=recipient,
            round=round,
            msg_type=msg_type,
            seq=seq,
            ts_ms=int(now * 1000),
            body_len=body_len,
        ).to_bytes()
        prefix_and_header = (
            PREFIX.pack(magic, WIRE_VERSION, self._key_id, len(header), len(payload)) + header
        )
        signature = self._identity.sign(signed_bytes(prefix_and_header, payload, context))
        return b"".join((prefix_and_header, payload, signature))


@dataclass(frozen=True)
class InboxPolicy:
    """Receiver limits.

    Attributes:
        max_body_bytes: largest accepted plaintext body, bytes (checked from the length prefix,
            before any crypto). Default 64 MiB (an HE public context is ~0.36 MB; adapters of large bases are bigger).
        max_clock_skew_s: accepted |sender timestamp - local clock|, seconds; also how long an
            accepted sequence number is remembered against replay (see
            :mod:`secure_pcft.crypto.replay`).
        round_window: accepted rounds are ``[current - window, current + window]``.
    """

    max_body_bytes: int = 64 * 1024 * 1024
    max_clock_skew_s: float = 300.0
    round_window: int = 1

    def __post_init__(self) -> None:
        if type(self.max_body_bytes) is not int or self.max_body_bytes < 1:
            raise ConfigError("inbox.max_body_bytes: must be a positive integer (bytes)")
        if not self.max_clock_skew_s > 0:
            raise ConfigError("inbox.max_clock_skew_s: must be > 0 (seconds)")
        if type(self.round_window) is not int or self.round_window < 0:
            raise ConfigError("inbox.round_window: must be an integer >= 0 (rounds)")


class Inbox:
    """Opens envelopes addressed to one peer; holds the roster and the replay state.

    Args:
        identity: the receiving peer's secret keys.
        roster: pinned public identities of everyone allowed to send.
        policy: size, clock-skew and round-window limits.
        clock: seconds since the epoch (injectable for tests); default an
            :class:`~secure_pcft.crypto.replay.AnchoredClock`, so that a step of the system clock
            moves no window.
    """

    def __init__(
        self,
        identity: Identity,
        roster: Roster,
        policy: InboxPolicy | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        if identity.name in roster:
            roster.verify(identity.public())
        self._identity = identity
        self._roster = roster
        self._policy = policy or InboxPolicy()
        self._clock = clock if clock is not None else AnchoredClock()
        self._current_round = 0
        self._replay = ReplayWindow(self._policy.max_clock_skew_s)
        self._box = _BoxCache(identity)

    @property
    def current_round(self) -> int:
        return self._current_round

    def advance_round(self, round: int) -> None:
        """Move the round window forward (rounds never go back).

        Raises:
            ConfigError: ``round`` is lower than the current round.
        """
        if type(round) is not int or round < self._current_round:
            raise ConfigError(f"round {round!r}: must be an integer >= {self._current_round}")
        self._current_round = round

    def open(self, wire: bytes) -> OpenedMessage:
        """Verify and decrypt one envelope.

        Raises:
            MessageError: malformed framing or header.
            OversizeMessageError: body above ``policy.max_body_bytes``.
            UnknownSenderError: sender key id not pinned.
            BadSignatureError: signature does not verify.
            AuthenticationError: header names a different sender than the signing key.
            WrongRecipientError: addressed to another peer.
            StaleTimestampError: timestamp more than the skew ahead of the local clock, or older
                than the window's floor (refused before anything from the message is stored).
            RoundWindowError: round outside the window.
            ReplayError: sequence number already accepted from that sender inside the window.
            BodyDecryptionError: ciphertext does not decrypt under the pinned keys.
        """
        if not isinstance(wire, bytes | bytearray | memoryview):
            raise self._reject(MessageError, "?", "wire data must be bytes")
        view = memoryview(wire).cast("B")  # no copy of the (possibly large) ciphertext until Box
        public, key_id, header_len, payload_len = self._check_framing(view)
        header_end = PREFIX.size + header_len
        payload = view[header_end : header_end + payload_len]
        context = PUBLIC_SIGNATURE_CONTEXT if public else SIGNATURE_CONTEXT
        sender = self._authenticate(
            view[:header_end], payload, view[-SIGNATURE_BYTES:], key_id, context
        )
        header = self._check_header(
            bytes(view[PREFIX.size : header_end]), sender, payload_len, public
        )
        self._check_freshness(header)
        if public:
            body = bytes(payload)
        else:
            try:
                body = self._box(sender).decrypt(bytes(payload))
            except _NaclCryptoError:
                raise self._reject(
                    BodyDecryptionError,
                    sender.name,
                    "body does not decrypt under the pinned box keys",
                ) from None
        self._replay.remember(sender.name, header.seq, header.ts_ms)
        return OpenedMessage(
            sender=sender.name,
            msg_type=header.msg_type,
            round=header.round,
            seq=header.seq,
            sent_at=header.ts_ms / 1000.0,
            body=body,
            recipient=header.recipient,
        )

    # ------------------------------------------------------------------ steps
    def _check_framing(self, wire: memoryview) -> tuple[bool, bytes, int, int]:
        """Lengths only (and whether the envelope is public): nothing here is trusted beyond
        sizing the buffers."""
        if len(wire) < PREFIX.size + SIGNATURE_BYTES:
            raise self._reject(MessageError, "?", f"envelope truncated ({len(wire)} bytes)")
        magic, version, key_id, header_len, ct_len = PREFIX.unpack_from(wire)
        who = key_id.hex()
        if magic not in (WIRE_MAGIC, PUBLIC_MAGIC):
            raise self._reject(MessageError, who, "bad magic")
        public = magic == PUBLIC_MAGIC
        overhead = 0 if public else BOX_OVERHEAD
        if version != WIRE_VERSION:
            raise self._reject(
                WireVersionError,
                who,
                f"wire version {version} is not accepted (this peer speaks {WIRE_VERSION} only)",
            )
        if not 2 <= header_len <= MAX_HEADER_BYTES:
            raise self._reject(MessageError, who, f"header length {header_len} out of range")
        if ct_len < overhead:
            raise self._reject(MessageError, who, f"ciphertext length {ct_len} below Box overhead")
        if ct_len - overhead > self._policy.max_body_bytes:
            raise self._reject(
                OversizeMessageError,
                who,
                f"body of {ct_len - overhead} bytes exceeds {self._policy.max_body_bytes}",
            )
        expected = PREFIX.size + header_len + ct_len + SIGNATURE_BYTES
        if len(wire) != expected:
            raise self._reject(
                MessageError, who, f"envelope is {len(wire)} bytes, framing says {expected}"
            )
        return public, key_id, header_len, ct_len

    def _authenticate(
        self,
        prefix_and_header: memoryview,
        ciphertext: memoryview,
        signature: memoryview,
        key_id: bytes,
        context: bytes,
    ) -> PublicIdentity:
        try:
            sender = self._roster.by_key_id(key_id)
        except UnknownPeerError:
            raise self._reject(UnknownSenderError, key_id.hex(), "sender not on roster") from None
        try:
            VerifyKey(sender.sign_pk).verify(
                signed_bytes(prefix_and_header, ciphertext, context), bytes(signature)
            )
        except _NaclBadSignature:
            raise self._reject(
                BadSignatureError, sender.name, "signature does not verify"
            ) from None
        return sender

    def _check_header(
        self, raw: bytes, sender: PublicIdentity, payload_len: int, public: bool
    ) -> EnvelopeHeader:
        try:
            header = EnvelopeHeader.from_bytes(raw)
        except MessageError as exc:
            raise self._reject(MessageError, sender.name, str(exc)) from None
        if header.v != WIRE_VERSION:
            raise self._reject(MessageError, sender.name, f"header version {header.v}")
        if header.sender != sender.name:
            raise self._reject(
                AuthenticationError, sender.name, "header sender differs from signing key"
            )
        if public and header.recipient != BROADCAST:
            raise self._reject(
                WrongRecipientError, sender.name, f"public envelope not addressed to {BROADCAST!r}"
            )
        if not public and header.recipient != self._identity.name:
            raise self._reject(WrongRecipientError, sender.name, "addressed to another peer")
        if header.body_len != payload_len - (0 if public else BOX_OVERHEAD):
            raise self._reject(MessageError, sender.name, "body_len does not match ciphertext")
        return header

    def _check_freshness(self, header: EnvelopeHeader) -> None:
        try:
            self._replay.check_timestamp(header.ts_ms, self._clock())
        except ReplayError as exc:
            raise self._reject(type(exc), header.sender, str(exc)) from None
        window = self._policy.round_window
        if abs(header.round - self._current_round) > window:
            raise self._reject(
                RoundWindowError,
                header.sender,
                f"round {header.round} outside [{self._current_round - window}, "
                f"{self._current_round + window}]",
            )
        try:
            self._replay.check_unseen(header.sender, header.seq)
        except ReplayError as exc:
            raise self._reject(type(exc), header.sender, str(exc)) from None

    def _reject(self, cls: type[MessageError], who: str, why: str) -> MessageError:
        logger.warning(
            "%s rejected envelope from %s: %s (%s)", self._identity.name, who, why, cls.__name__
        )
        return cls(f"envelope from {who}: {why}")


def check_public_envelope(wire: bytes, roster: Roster, max_body_bytes: int) -> EnvelopeHeader:
    """Verify a public envelope without being its recipient (a relay before fanning it out):
    framing, size, the pinned sender's signature and the header. Freshness and replays stay the
    receivers' checks (they hold the windows).

    Raises:
        MessageError: not a public envelope, malformed, or oversize; UnknownSenderError,
            BadSignatureError, AuthenticationError, WrongRecipientError as :meth:`Inbox.open`.
    """
    view = memoryview(wire).cast("B")
    if len(view) < PREFIX.size + SIGNATURE_BYTES:
        raise MessageError(f"public envelope truncated ({len(view)} bytes)")
    magic, version, key_id, header_len, body_len = PREFIX.unpack_from(view)
    if magic != PUBLIC_MAGIC or version != WIRE_VERSION:
        raise MessageError("not a public envelope of this wire version")
    if not 2 <= header_len <= MAX_HEADER_BYTES or body_len > max_body_bytes:
        raise OversizeMessageError(f"public envelope header {header_len} / body {body_len} bytes")
    header_end = PREFIX.size + header_len
    if len(view) != header_end + body_len + SIGNATURE_BYTES:
        raise MessageError("public envelope length differs from its framing")
    try:
        sender = roster.by_key_id(key_id)
    except UnknownPeerError:
        raise UnknownSenderError("public envelope: sender not on roster") from None
    body = view[header_end : header_end + body_len]
    try:
        VerifyKey(sender.sign_pk).verify(
            signed_bytes(view[:header_end], body, PUBLIC_SIGNATURE_CONTEXT),
            bytes(view[-SIGNATURE_BYTES:]),
        )
    except _NaclBadSignature:
        raise BadSignatureError(f"public envelope from {sender.name}: bad signature") from None
    header = EnvelopeHeader.from_bytes(bytes(view[PREFIX.size : header_end]))
    if header.sender != sender.name:
        raise AuthenticationError("public envelope: header sender differs from signing key")
    if header.recipient != BROADCAST or header.body_len != body_len:
        raise WrongRecipientError("public envelope: not addressed to every peer, or body length")
    return header
