"""Envelopes: round trip, and one test per rejection the receiver must make.

Wire layout under test (written out independently of the module, from its docstring):
magic(4) version(1) sender_key_id(16) H(u32) C(u32) header(H) ciphertext(C) signature(64), the
signature (v2) over b"secure-pcft envelope v2\\0" ‖ prefix ‖ header ‖ SHA-256(ciphertext).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import struct

import pytest
from nacl.public import Box, PrivateKey
from nacl.signing import VerifyKey

from secure_pcft.crypto.envelope import EnvelopeHeader, Inbox, InboxPolicy, OpenedMessage, Sealer
from secure_pcft.crypto.identity import Identity
from secure_pcft.crypto.replay import AnchoredClock
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
    StaleTimestampError,
    UnknownSenderError,
    WireVersionError,
    WrongRecipientError,
)

PREFIX = struct.Struct(">4sB16sII")
T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


ALICE, BOB, CAROL, MALLORY = (Identity.generate(n) for n in ("alice", "bob", "carol", "mallory"))
ROSTER = Roster(p.public() for p in (ALICE, BOB, CAROL))


def split(wire: bytes) -> tuple[bytes, bytes, bytes]:
    _, _, key_id, h, c = PREFIX.unpack_from(wire)
    header = wire[PREFIX.size : PREFIX.size + h]
    ciphertext = wire[PREFIX.size + h : PREFIX.size + h + c]
    return key_id, header, ciphertext


def build(
    signer: Identity,
    key_id: bytes,
    header: bytes,
    ciphertext: bytes,
    *,
    magic: bytes = b"SPCF",
    version: int = 2,
) -> bytes:
    start = PREFIX.pack(magic, version, key_id, len(header), len(ciphertext)) + header
    digest = hashlib.sha256(ciphertext).digest()
    return start + ciphertext + signer.sign(b"secure-pcft envelope v2\0" + start + digest)


def build_v1(signer: Identity, header: bytes, ciphertext: bytes) -> bytes:
    """The retired v1 format: version byte 1, the signature over the whole prefix, header, body."""
    signed = PREFIX.pack(b"SPCF", 1, signer.public().key_id, len(header), len(ciphertext))
    signed += header + ciphertext
    return signed + signer.sign(signed)


def header_dict(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "body_len": 5,
        "msg_type": "adapter",
        "recipient": "bob",
        "round": 0,
        "sender": "alice",
        "seq": 1,
        "ts_ms": int(T0 * 1000),
        "v": 2,
    }
    base.update(overrides)
    return base


def canonical(obj: dict[str, object]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def alice_to_bob(body: bytes = b"hello") -> bytes:
    return bytes(ALICE.box_for(BOB.public()).encrypt(body))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def inbox(clock: FakeClock) -> Inbox:
    return Inbox(BOB, ROSTER, InboxPolicy(max_body_bytes=4096), clock=clock)


@pytest.fixture
def sealer(clock: FakeClock) -> Sealer:
    return Sealer(ALICE, clock=clock)


# ---------------------------------------------------------------------- round trips
def test_round_trip(inbox: Inbox, sealer: Sealer) -> None:
    wire = sealer.seal(BOB.public(), "adapter", 0, b"safetensors bytes")

    msg = inbox.open(wire)

    assert msg == OpenedMessage(
        "alice", "adapter", 0, msg.seq, T0, b"safetensors bytes", recipient="bob"
    )
    assert not msg.public
    assert "safetensors" not in repr(msg)


def test_wire_layout_matches_the_documented_format(sealer: Sealer) -> None:
    wire = sealer.seal(BOB.public(), "adapter", 2, b"12345")

    magic, version, key_id, h, c = PREFIX.unpack_from(wire)
    header = json.loads(wire[PREFIX.size : PREFIX.size + h])

    assert (magic, version, key_id) == (b"SPCF", 2, ALICE.public().key_id)
    assert c == 5 + 40 and len(wire) == PREFIX.size + h + c + 64
    assert sorted(header) == sorted(header_dict())
    assert header["round"] == 2 and header["recipient"] == "bob" and header["body_len"] == 5
    assert b"12345" not in wire  # the body is encrypted


def test_empty_body_and_many_messages_in_order(inbox: Inbox, sealer: Sealer) -> None:
    wires = [sealer.seal(BOB.public(), "meta", 0, bytes([i]) * i) for i in range(5)]

    bodies = [inbox.open(w).body for w in wires]

    assert bodies == [bytes([i]) * i for i in range(5)]


def test_sequence_survives_sender_restart(clock: FakeClock, inbox: Inbox) -> None:
    inbox.open(Sealer(ALICE, clock=clock).seal(BOB.public(), "meta", 0, b"a"))
    clock.now += 0.001  # a restarted sender only needs a clock that moved forward

    msg = inbox.open(Sealer(ALICE, clock=clock).seal(BOB.public(), "meta", 0, b"b"))

    assert msg.body == b"b"


# ---------------------------------------------------------------------- rejections
def test_unknown_sender_is_rejected(inbox: Inbox, clock: FakeClock) -> None:
    wire = Sealer(MALLORY, clock=clock).seal(BOB.public(), "adapter", 0, b"x")

    with pytest.raises(UnknownSenderError):
        inbox.open(wire)


@pytest.mark.parametrize("where", ["signature", "header", "ciphertext-first", "ciphertext-last"])
def test_bad_signature_is_rejected(inbox: Inbox, sealer: Sealer, where: str) -> None:
    wire = bytearray(sealer.seal(BOB.public(), "adapter", 0, b"hello"))
    _, h, _ = split(bytes(wire))
    index = {
        "signature": len(wire) - 1,
        "header": PREFIX.size + 3,
        "ciphertext-first": PREFIX.size + len(h),
        "ciphertext-last": len(wire) - 65,
    }[where]
    wire[index] ^= 0x01

    with pytest.raises(BadSignatureError):
        inbox.open(bytes(wire))


def test_signature_is_checked_before_the_header_is_parsed(inbox: Inbox) -> None:
    garbage_header = b"{not json at all"
    forged = build(MALLORY, ALICE.public().key_id, garbage_header, alice_to_bob())
    signed_by_alice = build(ALICE, ALICE.public().key_id, garbage_header, alice_to_bob())

    with pytest.raises(BadSignatureError):
        inbox.open(forged)  # a header parser would have complained first otherwise
    with pytest.raises(MessageError, match="JSON") as info:
        inbox.open(signed_by_alice)
    assert not isinstance(info.value, AuthenticationError)


def test_header_sender_must_match_the_signing_key(inbox: Inbox) -> None:
    wire = build(
        ALICE, ALICE.public().key_id, canonical(header_dict(sender="carol")), alice_to_bob()
    )

    with pytest.raises(AuthenticationError, match="sender differs"):
        inbox.open(wire)


def test_wrong_recipient_is_rejected(clock: FakeClock) -> None:
    to_carol = Sealer(ALICE, clock=clock).seal(CAROL.public(), "adapter", 0, b"for carol")
    _, header, ciphertext = split(to_carol)
    # Carol (a roster member) forwards it to Bob with a valid framing: Bob must refuse it.
    bob_inbox = Inbox(BOB, ROSTER, clock=clock)

    with pytest.raises(WrongRecipientError):
        bob_inbox.open(to_carol)
    with pytest.raises(BadSignatureError):
        bob_inbox.open(build(CAROL, ALICE.public().key_id, header, ciphertext))


def test_replayed_envelope_is_rejected(inbox: Inbox, sealer: Sealer) -> None:
    wire = sealer.seal(BOB.public(), "adapter", 0, b"once")
    inbox.open(wire)

    with pytest.raises(ReplayError, match="sequence") as info:
        inbox.open(wire)
    assert type(info.value) is ReplayError


def test_envelopes_reordered_inside_the_window_open_once_each(inbox: Inbox, sealer: Sealer) -> None:
    first = sealer.seal(BOB.public(), "adapter", 0, b"1")
    second = sealer.seal(BOB.public(), "adapter", 0, b"2")

    assert inbox.open(second).body == b"2"
    assert inbox.open(first).body == b"1"
    for wire in (first, second):
        with pytest.raises(ReplayError, match="already accepted"):
            inbox.open(wire)


def test_a_future_dated_envelope_does_not_silence_the_link(inbox: Inbox, clock: FakeClock) -> None:
    # Issue 13: after +250 s (inside the 300 s skew) was accepted, the next normally stamped envelope
    # was refused, because the sequence watermark had jumped with the sender's clock.
    ahead = Sealer(ALICE, clock=FakeClock(T0 + 250.0)).seal(BOB.public(), "adapter", 0, b"ahead")
    normal = Sealer(ALICE, clock=clock).seal(BOB.public(), "adapter", 0, b"normal")

    assert inbox.open(ahead).body == b"ahead"
    assert inbox.open(normal).body == b"normal"


def test_a_refused_future_envelope_changes_nothing(inbox: Inbox, sealer: Sealer) -> None:
    far = Sealer(ALICE, clock=FakeClock(T0 + 3600.0)).seal(BOB.public(), "adapter", 0, b"far")

    with pytest.raises(StaleTimestampError, match="future"):
        inbox.open(far)
    assert inbox.open(sealer.seal(BOB.public(), "adapter", 0, b"ok")).body == b"ok"


def test_a_replay_after_the_window_is_refused_at_the_door(inbox: Inbox, clock: FakeClock) -> None:
    wire = Sealer(ALICE, clock=clock).seal(BOB.public(), "adapter", 0, b"x")
    inbox.open(wire)

    clock.now += 301.0  # its sequence number is forgotten, and its timestamp is now too old

    with pytest.raises(StaleTimestampError, match="past"):
        inbox.open(wire)


def test_the_window_floor_does_not_follow_a_clock_stepped_back(
    inbox: Inbox, clock: FakeClock
) -> None:
    wire = Sealer(ALICE, clock=clock).seal(BOB.public(), "adapter", 0, b"x")
    inbox.open(wire)
    clock.now += 400.0
    with pytest.raises(StaleTimestampError):
        inbox.open(wire)

    clock.now = T0  # the local clock jumps back: the forgotten envelope must still be refused

    with pytest.raises(ReplayError):
        inbox.open(wire)


def test_replay_memory_is_bounded_per_sender() -> None:
    from secure_pcft.crypto.replay import ReplayWindow

    window = ReplayWindow(max_skew_s=300.0, max_per_sender=3)
    ts = int(T0 * 1000)
    for seq in (1, 2, 3):
        window.check_timestamp(ts, T0)
        window.check_unseen("alice", seq)
        window.remember("alice", seq, ts)

    with pytest.raises(ReplayError, match="more than 3"):
        window.check_unseen("alice", 4)
    window.check_unseen("carol", 1)  # another sender's link is unaffected
    window.check_timestamp(ts + 301_000, T0 + 301.0)  # the clock moves on: old entries expire
    window.check_unseen("alice", 4)
    assert window.remembered("alice") == 0


@pytest.mark.parametrize("msg_round", [3, 7, 100])
def test_round_outside_window_is_rejected(inbox: Inbox, sealer: Sealer, msg_round: int) -> None:
    inbox.advance_round(5)  # window 1 → rounds 4..6 accepted

    with pytest.raises(RoundWindowError):
        inbox.open(sealer.seal(BOB.public(), "adapter", msg_round, b"x"))


def test_rounds_inside_window_are_accepted(inbox: Inbox, sealer: Sealer) -> None:
    inbox.advance_round(5)

    rounds = [inbox.open(sealer.seal(BOB.public(), "adapter", r, b"x")).round for r in (4, 5, 6)]

    assert rounds == [4, 5, 6]


def test_rounds_never_go_back(inbox: Inbox) -> None:
    inbox.advance_round(3)

    with pytest.raises(ConfigError):
        inbox.advance_round(2)


@pytest.mark.parametrize("offset_s", [-301.0, 301.0, -1e6, 1e6])
def test_stale_or_future_timestamp_is_rejected(inbox: Inbox, offset_s: float) -> None:
    wire = Sealer(ALICE, clock=FakeClock(T0 + offset_s)).seal(BOB.public(), "adapter", 0, b"x")

    with pytest.raises(StaleTimestampError):
        inbox.open(wire)


def test_timestamp_within_skew_is_accepted(inbox: Inbox) -> None:
    wire = Sealer(ALICE, clock=FakeClock(T0 - 299.0)).seal(BOB.public(), "adapter", 0, b"x")

    assert inbox.open(wire).body == b"x"


def test_oversize_body_is_rejected_before_any_crypto(inbox: Inbox, sealer: Sealer) -> None:
    ok = sealer.seal(BOB.public(), "adapter", 0, b"\0" * 4096)
    big = sealer.seal(BOB.public(), "adapter", 0, b"\0" * 4097)
    # An unsigned, unknown-sender frame of the same size is refused for size, not for identity.
    _, header, ciphertext = split(big)
    unsigned = build(MALLORY, bytes(16), header, ciphertext)

    assert len(inbox.open(ok).body) == 4096
    with pytest.raises(OversizeMessageError):
        inbox.open(big)
    with pytest.raises(OversizeMessageError):
        inbox.open(unsigned)


@pytest.mark.parametrize(
    "case",
    [
        "empty",
        "short",
        "truncated",
        "extended",
        "magic",
        "version",
        "header-len-0",
        "header-len-big",
    ],
)
def test_malformed_framing_is_rejected(inbox: Inbox, sealer: Sealer, case: str) -> None:
    wire = sealer.seal(BOB.public(), "adapter", 0, b"hello")
    key_id, header, ct = split(wire)
    bad = {
        "empty": b"",
        "short": wire[:50],
        "truncated": wire[:-1],
        "extended": wire + b"\0",
        "magic": build(ALICE, key_id, header, ct, magic=b"SPCG"),
        "version": build(ALICE, key_id, header, ct, version=3),
        "header-len-0": build(ALICE, key_id, b"", ct),
        "header-len-big": build(ALICE, key_id, b" " * 1025, ct),
    }[case]

    with pytest.raises(MessageError):
        inbox.open(bad)


def test_a_v1_envelope_is_refused_with_a_typed_error(inbox: Inbox) -> None:
    header = canonical(header_dict(v=1))
    wire = build_v1(ALICE, header, alice_to_bob())

    with pytest.raises(WireVersionError, match="wire version 1"):
        inbox.open(wire)


def test_signature_covers_the_ciphertext_before_any_decryption(
    inbox: Inbox, sealer: Sealer
) -> None:
    wire = bytearray(sealer.seal(BOB.public(), "adapter", 0, b"hello"))
    _, h, c = PREFIX.unpack_from(wire)[2:]
    wire[PREFIX.size + h + c - 1] ^= 1  # last ciphertext byte

    with pytest.raises(BadSignatureError):  # not BodyDecryptionError: refused at the signature
        inbox.open(bytes(wire))


def test_the_same_ciphertext_under_the_v1_signature_does_not_verify(inbox: Inbox) -> None:
    # v1 signed the body itself; a v1 signature moved onto a v2 frame must not verify.
    header, ct = canonical(header_dict()), alice_to_bob()
    v1 = build_v1(ALICE, header, ct)
    forged = b"SPCF\x02" + v1[5:]

    with pytest.raises(BadSignatureError):
        inbox.open(forged)


@pytest.mark.parametrize(
    "header",
    [
        # fields reordered (not canonical), though signed by the true sender
        json.dumps(header_dict(), separators=(",", ":"))
        .encode()
        .replace(b'{"body_len":5,', b'{"v":2,')
        .replace(b',"v":2}', b',"body_len":5}'),
        canonical(header_dict()).replace(b":", b": "),
        canonical({**header_dict(), "extra": 1}),
        canonical({k: v for k, v in header_dict().items() if k != "seq"}),
        canonical(header_dict(round=True)),
        canonical(header_dict(seq=-1)),
        canonical(header_dict(seq=2**63)),
        canonical(header_dict(msg_type="Bad Type")),
        canonical(header_dict(sender=7)),
        canonical(header_dict(v=1)),
        canonical(header_dict(body_len=6)),
        b"[1, 2, 3]",
        b'{"body_len": NaN}',
        b"\xff\xfe",
    ],
    ids=[
        "reordered",
        "spaces",
        "extra",
        "missing",
        "bool-round",
        "negative-seq",
        "huge-seq",
        "msg-type",
        "sender-type",
        "version",
        "body-len",
        "array",
        "nan",
        "non-ascii",
    ],
)
def test_malformed_header_signed_by_sender_is_rejected(inbox: Inbox, header: bytes) -> None:
    wire = build(ALICE, ALICE.public().key_id, header, alice_to_bob())

    with pytest.raises(MessageError) as info:
        inbox.open(wire)
    assert not isinstance(info.value, AuthenticationError | ReplayError)


def test_undecryptable_body_is_rejected(inbox: Inbox) -> None:
    stranger_box = Box(PrivateKey.generate(), PrivateKey(bytes(32)).public_key)
    wire = build(
        ALICE, ALICE.public().key_id, canonical(header_dict()), stranger_box.encrypt(b"hello")
    )

    with pytest.raises(BodyDecryptionError):
        inbox.open(wire)


def test_resigned_ciphertext_of_another_member_does_not_decrypt(clock: FakeClock) -> None:
    """Why Box and not SealedBox: Carol strips Alice's signature and claims Alice's ciphertext."""
    original = Sealer(ALICE, clock=clock).seal(BOB.public(), "adapter", 0, b"alice's update")
    _, _, ciphertext = split(original)
    claimed = canonical(header_dict(sender="carol", body_len=len(b"alice's update")))
    wire = build(CAROL, CAROL.public().key_id, claimed, ciphertext)

    with pytest.raises(BodyDecryptionError):
        Inbox(BOB, ROSTER, clock=clock).open(wire)


def test_non_bytes_input_is_a_message_error(inbox: Inbox) -> None:
    with pytest.raises(MessageError):
        inbox.open("text")  # type: ignore[arg-type]


def test_rejections_are_logged_with_who_and_why_but_never_the_body(
    inbox: Inbox, sealer: Sealer, caplog: pytest.LogCaptureFixture
) -> None:
    wire = sealer.seal(BOB.public(), "adapter", 0, b"SECRET-PAYLOAD")
    inbox.open(wire)

    with (
        caplog.at_level(logging.WARNING, logger="secure_pcft.crypto.envelope"),
        pytest.raises(ReplayError),
    ):
        inbox.open(wire)

    assert "alice" in caplog.text and "sequence" in caplog.text
    assert "SECRET-PAYLOAD" not in caplog.text


def test_inbox_refuses_an_identity_that_contradicts_the_roster() -> None:
    impostor_bob = Identity.generate("bob")

    with pytest.raises(AuthenticationError):
        Inbox(impostor_bob, ROSTER)


@pytest.mark.parametrize(
    ("msg_type", "msg_round", "body"),
    [("Bad Type", 0, b""), ("adapter", -1, b""), ("adapter", 0, "text")],
)
def test_sealer_refuses_bad_arguments(
    sealer: Sealer, msg_type: str, msg_round: int, body: object
) -> None:
    with pytest.raises(ConfigError):
        sealer.seal(BOB.public(), msg_type, msg_round, body)  # type: ignore[arg-type]


def test_policy_validation() -> None:
    with pytest.raises(ConfigError, match="bytes"):
        InboxPolicy(max_body_bytes=0)
    with pytest.raises(ConfigError, match="seconds"):
        InboxPolicy(max_clock_skew_s=0)
    with pytest.raises(ConfigError, match="rounds"):
        InboxPolicy(round_window=-1)


def test_header_round_trip_is_canonical() -> None:
    header = EnvelopeHeader("alice", "bob", 1, "adapter", 9, 123, 5)

    assert EnvelopeHeader.from_bytes(header.to_bytes()) == header


# ---------------------------------------------------------------------- public envelopes
PUBLIC_CONTEXT = b"secure-pcft public envelope v2\x00"


def test_public_envelope_round_trip_and_layout(inbox: Inbox, sealer: Sealer) -> None:
    wire = sealer.seal_public("he-context", 0, b"public key bytes")

    magic, version, key_id, h, c = PREFIX.unpack_from(wire)
    header = wire[PREFIX.size : PREFIX.size + h]
    body = wire[PREFIX.size + h : PREFIX.size + h + c]
    assert (magic, version, key_id) == (b"SPCP", 2, ALICE.public().key_id)
    assert body == b"public key bytes"  # in clear: it is public by definition
    assert json.loads(header)["recipient"] == "*"
    signed = PUBLIC_CONTEXT + wire[: PREFIX.size + h] + hashlib.sha256(body).digest()
    VerifyKey(ALICE.public().sign_pk).verify(signed, wire[-64:])  # the documented signature
    msg = inbox.open(wire)
    assert msg.public and msg.recipient == "*" and msg.body == b"public key bytes"
    other = Inbox(CAROL, ROSTER, clock=lambda: T0)
    assert other.open(wire).body == b"public key bytes"  # the same bytes open for every peer


def test_public_envelope_is_replay_protected_and_tamper_evident(
    inbox: Inbox, sealer: Sealer
) -> None:
    wire = sealer.seal_public("he-context", 0, b"public key bytes")
    inbox.open(wire)
    with pytest.raises(ReplayError):
        inbox.open(wire)
    body_flipped = bytearray(sealer.seal_public("he-context", 0, b"public key bytes"))
    body_flipped[-70] ^= 1  # last body byte
    with pytest.raises(BadSignatureError):
        inbox.open(bytes(body_flipped))


def test_public_and_sealed_envelopes_cannot_pass_for_each_other(
    inbox: Inbox, sealer: Sealer
) -> None:
    public = sealer.seal_public("he-context", 0, b"x" * 64)
    sealed = sealer.seal(BOB.public(), "he-context", 0, b"x" * 64)
    for wire, magic in ((public, b"SPCF"), (sealed, b"SPCP")):
        with pytest.raises(BadSignatureError):  # the signature context differs with the magic
            inbox.open(magic + wire[4:])


def test_a_signed_public_envelope_must_be_addressed_to_everyone(
    inbox: Inbox, clock: FakeClock
) -> None:
    start_header = EnvelopeHeader(
        sender="alice", recipient="bob", round=0, msg_type="he-context", seq=1,
        ts_ms=int(clock() * 1000), body_len=3,
    ).to_bytes()  # fmt: skip
    start = PREFIX.pack(b"SPCP", 2, ALICE.public().key_id, len(start_header), 3) + start_header
    wire = start + b"abc" + ALICE.sign(PUBLIC_CONTEXT + start + hashlib.sha256(b"abc").digest())
    with pytest.raises(WrongRecipientError, match="public envelope"):
        inbox.open(wire)


def test_one_sequence_counter_for_sealed_and_public_envelopes(
    inbox: Inbox, clock: FakeClock
) -> None:
    sealer = Sealer(ALICE, clock=clock)  # a frozen clock: every number comes from the counter
    first = inbox.open(sealer.seal(BOB.public(), "adapter", 0, b"a"))
    public = inbox.open(sealer.seal_public("he-context", 0, b"b"))
    sealer.seal(CAROL.public(), "adapter", 0, b"c")
    last = inbox.open(sealer.seal(BOB.public(), "adapter", 0, b"d"))
    assert first.seq < public.seq < last.seq
    assert last.seq - first.seq == 3


def test_a_receiver_whose_clock_steps_forward_and_back_still_accepts_honest_senders() -> None:
    """The receiver's window runs on an anchored clock: a step of its system clock (forward
    1,000 s, then back) moves nothing; on the raw wall clock the floor would jump 1,000 s and
    refuse honest senders for ~700 s."""
    wall, mono = FakeClock(T0), FakeClock(50.0)
    raw = Inbox(BOB, ROSTER, clock=wall)
    steady = Inbox(BOB, ROSTER, clock=AnchoredClock(wall=wall, monotonic=mono))
    honest = Sealer(ALICE, clock=FakeClock(T0 + 2.0))
    wall.now += 1_000.0  # the receiver's system clock steps forward ...
    mono.now += 1.0
    stamped_then = Sealer(ALICE, clock=FakeClock(T0 + 1_000.0))
    for inbox in (raw, steady):
        with contextlib.suppress(StaleTimestampError):  # raw accepts it, steady finds it early
            inbox.open(stamped_then.seal(BOB.public(), "meta", 0, b"x"))
    wall.now -= 1_000.0  # ... and back
    mono.now += 1.0

    with pytest.raises(StaleTimestampError, match="in the past"):
        raw.open(honest.seal(BOB.public(), "meta", 0, b"a"))
    assert steady.open(honest.seal(BOB.public(), "meta", 0, b"b")).body == b"b"
