"""Fuzzing the envelope opener: whatever arrives, it never crashes and never accepts a forgery.

Every input must either open to exactly what the sender sealed, or raise a SecurePcftError subclass
(a MessageError, in fact). No encryption-heavy work here, so example counts can stay generous.
"""

from __future__ import annotations

import hashlib
import json
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secure_pcft.crypto.envelope import Inbox, Sealer
from secure_pcft.crypto.identity import Identity
from secure_pcft.crypto.roster import Roster
from secure_pcft.errors import (
    AuthenticationError,
    BadSignatureError,
    MessageError,
    SecurePcftError,
    UnknownSenderError,
)

PREFIX = struct.Struct(">4sB16sII")
T0 = 1_700_000_000.0
ALICE, BOB, CAROL, MALLORY = (Identity.generate(n) for n in ("alice", "bob", "carol", "mallory"))
ROSTER = Roster(p.public() for p in (ALICE, BOB, CAROL))
BODY = b"adapter bytes \x00\x01\x02" * 4
WIRE = Sealer(ALICE, clock=lambda: T0).seal(BOB.public(), "adapter", 0, BODY)
_, _, _, H_LEN, C_LEN = PREFIX.unpack_from(WIRE)
HEADER = WIRE[PREFIX.size : PREFIX.size + H_LEN]
CIPHERTEXT = WIRE[PREFIX.size + H_LEN : PREFIX.size + H_LEN + C_LEN]

PUBLIC_WIRE = Sealer(ALICE, clock=lambda: T0).seal_public("he-context", 0, BODY)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fresh_inbox() -> Inbox:
    return Inbox(BOB, ROSTER, clock=lambda: T0)


def build(signer: Identity, key_id: bytes, header: bytes, ciphertext: bytes) -> bytes:
    """A v2 envelope written from the format's description (crypto/envelope.py docstring)."""
    start = PREFIX.pack(b"SPCF", 2, key_id, len(header), len(ciphertext)) + header
    digest = hashlib.sha256(ciphertext).digest()
    return start + ciphertext + signer.sign(b"secure-pcft envelope v2\0" + start + digest)


def open_or_error(wire: bytes) -> SecurePcftError | None:
    """Open ``wire``; return the typed error, or None if it opened to the original message."""
    try:
        msg = fresh_inbox().open(wire)
    except SecurePcftError as exc:
        assert isinstance(exc, MessageError)
        return exc
    assert (msg.sender, msg.body) == ("alice", BODY)  # only the genuine message may open
    return None


def test_control_the_genuine_envelope_opens() -> None:
    assert open_or_error(WIRE) is None
    assert open_or_error(PUBLIC_WIRE) is None


@FUZZ
@given(st.integers(0, len(PUBLIC_WIRE) * 8 - 1), st.integers(0, len(PUBLIC_WIRE) - 1))
def test_public_envelope_bit_flips_and_truncations_are_rejected(bit: int, length: int) -> None:
    wire = bytearray(PUBLIC_WIRE)
    wire[bit // 8] ^= 1 << (bit % 8)
    assert open_or_error(bytes(wire)) is not None
    assert open_or_error(PUBLIC_WIRE[:length]) is not None


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_behind_a_public_prefix_never_crash(tail: bytes) -> None:
    assert open_or_error(PUBLIC_WIRE[: PREFIX.size] + tail) is not None


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_never_crash(data: bytes) -> None:
    assert open_or_error(data) is not None


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_behind_a_valid_prefix_never_crash(tail: bytes) -> None:
    assert open_or_error(WIRE[: PREFIX.size] + tail) is not None


@FUZZ
@given(st.integers(0, len(WIRE) * 8 - 1))
def test_any_single_bit_flip_is_rejected(bit: int) -> None:
    wire = bytearray(WIRE)
    wire[bit // 8] ^= 1 << (bit % 8)

    assert open_or_error(bytes(wire)) is not None


@FUZZ
@given(st.sets(st.integers(0, len(WIRE) * 8 - 1), min_size=2, max_size=16))
def test_multiple_bit_flips_are_rejected(bits: set[int]) -> None:
    wire = bytearray(WIRE)
    for bit in bits:
        wire[bit // 8] ^= 1 << (bit % 8)

    assert open_or_error(bytes(wire)) is not None


@FUZZ
@given(st.integers(0, len(WIRE) - 1))
def test_any_truncation_is_rejected(length: int) -> None:
    assert open_or_error(WIRE[:length]) is not None


@FUZZ
@given(st.binary(min_size=1, max_size=128))
def test_any_extension_is_rejected(extra: bytes) -> None:
    assert open_or_error(WIRE + extra) is not None


@FUZZ
@given(st.permutations(sorted(json.loads(HEADER))))
def test_reordered_header_resigned_by_the_sender_is_rejected_unless_canonical(
    order: list[str],
) -> None:
    obj = json.loads(HEADER)
    reordered = json.dumps({k: obj[k] for k in order}, separators=(",", ":")).encode()

    error = open_or_error(build(ALICE, ALICE.public().key_id, reordered, CIPHERTEXT))

    assert (error is None) == (reordered == HEADER)


@FUZZ
@given(
    st.sampled_from([CAROL, MALLORY]), st.booleans(), st.permutations(sorted(json.loads(HEADER)))
)
def test_resigning_with_another_key_is_rejected(
    signer: Identity, own_key_id: bool, order: list[str]
) -> None:
    obj = json.loads(HEADER)
    header = json.dumps({k: obj[k] for k in order}, separators=(",", ":")).encode()
    key_id = signer.public().key_id if own_key_id else ALICE.public().key_id

    error = open_or_error(build(signer, key_id, header, CIPHERTEXT))

    assert isinstance(error, AuthenticationError | MessageError)
    if not own_key_id:
        assert isinstance(error, BadSignatureError)
    elif signer is MALLORY:
        assert isinstance(error, UnknownSenderError)


_JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(sorted(json.loads(HEADER))) | st.text(max_size=8),
        _JSON_SCALARS | st.lists(_JSON_SCALARS, max_size=3),
        max_size=10,
    )
)
def test_arbitrary_signed_headers_never_crash(obj: dict[str, object]) -> None:
    header = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()

    error = open_or_error(build(ALICE, ALICE.public().key_id, header, CIPHERTEXT))

    assert error is not None or header == HEADER


@FUZZ
@given(
    st.fixed_dictionaries(
        {
            "round": st.integers(-3, 2**64),
            "seq": st.integers(-3, 2**64),
            "ts_ms": st.integers(-3, 2**64),
            "body_len": st.integers(-3, 2**20),
        }
    )
)
def test_signed_headers_with_fuzzed_numbers_never_crash(fields: dict[str, int]) -> None:
    obj = {**json.loads(HEADER), **fields}
    header = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()

    open_or_error(build(ALICE, ALICE.public().key_id, header, CIPHERTEXT))
