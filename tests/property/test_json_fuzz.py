"""Fuzzing the JSON layer: message headers, their metadata, signed envelope headers, relay records.

Issue 13's fuzz found ``RecursionError`` (nesting 10,000 deep) and a bare ``ValueError`` (a
5,000-digit integer) escaping from JSON metadata. Here generated documents, and valid documents with
such pieces spliced in at random places, must each end in a typed :class:`SecurePcftError` or a
valid parse — nothing else may escape.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secure_pcft import bounded_json
from secure_pcft.collab.messages import _PREFIX, MAGIC, VERSION, Message, decode_message
from secure_pcft.crypto.envelope import Inbox
from secure_pcft.crypto.identity import Identity
from secure_pcft.crypto.roster import Roster
from secure_pcft.errors import MessageError, SecurePcftError
from secure_pcft.runtime.flower.errors import RelayRecordError
from secure_pcft.runtime.flower.records import StepReply

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
JSON_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
# The pieces that broke plain json, and a few of their neighbours.
POISON = st.sampled_from(
    [
        "[" * 10_000 + "]" * 10_000,
        '{"a":' * 3_000 + "1" + "}" * 3_000,
        "[" * 10_000,
        "7" * 5_000,
        "-" + "9" * 4_301,
        "1e999",
        "NaN",
        "-Infinity",
        "0." + "0" * 5_000 + "1",
        '"\\ud800"',
        '"' + "\\" * 9,
    ]
)
VALID_HEADER = {
    "body_len": 0,
    "meta": {"signature": [0.25, -1.5], "round_loss": 3.25, "note": "ok"},
    "recipient": "peer-1",
    "round": 2,
    "sender": "peer-0",
    "type": "adapter",
}


def message_wire(header_text: str | bytes) -> bytes:
    raw = header_text.encode() if isinstance(header_text, str) else header_text
    return _PREFIX.pack(MAGIC, VERSION, len(raw)) + raw


def decode_or_error(wire: bytes) -> Message | SecurePcftError:
    try:
        return decode_message(wire)
    except SecurePcftError as exc:
        assert isinstance(exc, MessageError)
        return exc


def splice(text: str, at: float, piece: str, drop: int) -> str:
    i = int(at * len(text))
    return text[:i] + piece + text[i + drop :]


def test_control_a_valid_header_decodes() -> None:
    result = decode_or_error(message_wire(json.dumps(VALID_HEADER)))

    assert isinstance(result, Message) and result.meta == VALID_HEADER["meta"]


@FUZZ
@given(JSON_VALUES)
def test_any_generated_meta_decodes_or_is_a_typed_error(meta: Any) -> None:
    header = {**VALID_HEADER, "meta": meta}

    result = decode_or_error(message_wire(json.dumps(header)))

    if isinstance(result, Message):
        assert result.meta == meta


@FUZZ
@given(POISON, st.floats(0.0, 1.0), st.integers(0, 3))
def test_poison_spliced_into_a_header_is_a_typed_error_or_valid(
    piece: str, at: float, drop: int
) -> None:
    text = splice(json.dumps(VALID_HEADER), at, piece, drop)

    decode_or_error(message_wire(text))


@FUZZ
@given(POISON, st.sampled_from(sorted(VALID_HEADER["meta"])))
def test_poison_as_a_meta_value_is_refused(piece: str, key: str) -> None:
    text = json.dumps(VALID_HEADER).replace(f'"{key}": ', f'"{key}": {piece}, "_": ', 1)

    assert isinstance(decode_or_error(message_wire(text)), MessageError)


@FUZZ
@given(st.binary(max_size=512), st.floats(0.0, 1.0))
def test_random_bytes_inside_a_header_never_escape_untyped(junk: bytes, at: float) -> None:
    raw = json.dumps(VALID_HEADER).encode()
    i = int(at * len(raw))

    decode_or_error(message_wire(raw[:i] + junk + raw[i:]))


ALICE, BOB = Identity.generate("alice"), Identity.generate("bob")
ROSTER = Roster(p.public() for p in (ALICE, BOB))
T0 = 1_700_000_000.0
ENVELOPE_HEADER = {
    "body_len": 5,
    "msg_type": "adapter",
    "recipient": "bob",
    "round": 0,
    "sender": "alice",
    "seq": 1,
    "ts_ms": int(T0 * 1000),
    "v": 2,
}


@FUZZ
@given(POISON, st.sampled_from(sorted(ENVELOPE_HEADER)))
def test_signed_envelope_header_with_poison_is_a_typed_error(piece: str, field: str) -> None:
    # Signed by a roster member, so the header is parsed: the JSON layer must refuse it.
    prefix = struct.Struct(">4sB16sII")
    header = json.dumps({**ENVELOPE_HEADER, field: "@@"}, sort_keys=True, separators=(",", ":"))
    header_bytes = header.replace('"@@"', piece).encode()
    ciphertext = b"\0" * 45
    start = (
        prefix.pack(b"SPCF", 2, ALICE.public().key_id, len(header_bytes), len(ciphertext))
        + header_bytes
    )
    digest = hashlib.sha256(ciphertext).digest()
    wire = start + ciphertext + ALICE.sign(b"secure-pcft envelope v2\0" + start + digest)
    try:
        Inbox(BOB, ROSTER, clock=lambda: T0).open(wire)
    except SecurePcftError as exc:
        assert isinstance(exc, MessageError)
    else:
        raise AssertionError("a poisoned header opened")


@FUZZ
@given(POISON | JSON_VALUES.map(json.dumps))
def test_relay_record_info_is_a_typed_error_or_valid(info: str) -> None:
    from flwr.app import ConfigRecord, RecordDict

    content = RecordDict(
        {"spcft": ConfigRecord({"step": "exchange", "round": 1, "n": 0, "info": info})}
    )
    try:
        reply = StepReply.from_record(content)
    except RelayRecordError:
        return
    assert reply.info == json.loads(info)


@FUZZ
@given(JSON_VALUES, POISON, st.floats(0.0, 1.0), st.integers(0, 3))
def test_bounded_loads_never_raises_anything_but_the_callers_error(
    value: Any, piece: str, at: float, drop: int
) -> None:
    limits = bounded_json.JsonLimits(max_bytes=1 << 20)
    for text in (json.dumps(value), splice(json.dumps(value), at, piece, drop)):
        with contextlib.suppress(MessageError):
            bounded_json.loads(text, limits, MessageError, "doc")
