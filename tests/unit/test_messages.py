"""The message layer: round trips and rejection of malformed bytes."""

from __future__ import annotations

import contextlib
import json
import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from secure_pcft.collab.messages import (
    MAGIC,
    Message,
    MessageType,
    decode_message,
    encode_message,
)
from secure_pcft.errors import MessageError, SecurePcftError


def sample() -> Message:
    return Message(
        MessageType.ADAPTER,
        "plant-a",
        "plant-b",
        3,
        {"steps": 20},
        {"w.lora_A": torch.randn(4, 8), "w.lora_B": torch.zeros(8, 4)},
    )


def test_round_trip() -> None:
    msg = sample()
    back = decode_message(encode_message(msg))
    assert (back.msg_type, back.sender, back.recipient, back.round, back.meta) == (
        msg.msg_type,
        msg.sender,
        msg.recipient,
        msg.round,
        msg.meta,
    )
    assert all(torch.equal(back.tensors[k], msg.tensors[k]) for k in msg.tensors)


def test_no_pickle_on_the_wire() -> None:
    data = encode_message(sample())
    assert b"\x80\x04" not in data[:16] and data.startswith(MAGIC)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:3],  # truncated prefix
        lambda b: b"XXXX" + b[4:],  # bad magic
        lambda b: b[:4] + b"\x09" + b[5:],  # bad version
        lambda b: b[:-10],  # truncated tensor section
        lambda b: b + b"extra",  # trailing bytes
    ],
)
def test_malformed_bytes_raise_message_error(mutate) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MessageError):
        decode_message(mutate(encode_message(sample())))


def _with_header(header: object, body: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return MAGIC + struct.pack(">BI", 1, len(raw)) + raw + body


@pytest.mark.parametrize(
    "header",
    [
        [],
        {"type": "adapter"},
        {"type": "nope", "sender": "a", "recipient": "b", "round": 0, "meta": {}, "body_len": 0},
        {"type": "adapter", "sender": "", "recipient": "b", "round": 0, "meta": {}, "body_len": 0},
        {
            "type": "adapter",
            "sender": "a",
            "recipient": "b",
            "round": -1,
            "meta": {},
            "body_len": 0,
        },
        {"type": "adapter", "sender": "a", "recipient": "b", "round": 0, "meta": [], "body_len": 0},
    ],
)
def test_malformed_headers(header: object) -> None:
    with pytest.raises(MessageError):
        decode_message(_with_header(header))


def test_garbage_tensor_section() -> None:
    h = {"type": "adapter", "sender": "a", "recipient": "b", "round": 0, "meta": {}, "body_len": 5}
    with pytest.raises(MessageError):
        decode_message(_with_header(h, b"\x00\x01\x02\x03\x04"))


def test_oversize_is_rejected_before_parsing() -> None:
    with pytest.raises(MessageError, match="limit"):
        decode_message(encode_message(sample()), max_bytes=100)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_never_crash(data: bytes) -> None:
    with contextlib.suppress(SecurePcftError):
        decode_message(data)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 255))
def test_bit_flips_never_crash(pos: int, flip: int) -> None:
    data = bytearray(encode_message(sample()))
    data[pos % len(data)] ^= flip
    with contextlib.suppress(SecurePcftError):
        decode_message(bytes(data))


def test_pre_encoded_tensors_give_the_same_bytes() -> None:
    from secure_pcft.collab.messages import encode_tensors

    msg = sample()
    cached = Message(
        msg.msg_type, msg.sender, msg.recipient, msg.round, msg.meta, msg.tensors,
        encoded=encode_tensors(msg.tensors),
    )  # fmt: skip

    assert encode_message(cached) == encode_message(msg)
    assert cached == msg  # the cache is not part of a message's identity


def test_discovery_serialises_one_adapter_once_for_all_recipients() -> None:
    from types import SimpleNamespace

    from secure_pcft.collab import protocol
    from secure_pcft.collab.messages import decode_tensors
    from secure_pcft.collab.strategy import Discovery

    adapter = {"lora_A": torch.randn(4, 8), "lora_B": torch.zeros(8, 4)}
    sent: list[tuple[int, bytes | None]] = []
    peer = SimpleNamespace(
        index=1,
        peer_ids=["p0", "p1", "p2", "p3"],
        released_adapter=lambda: adapter,
        send=lambda j, kind, tensors, *, encoded=None: sent.append((j, encoded)),
    )
    strategy = SimpleNamespace(discovery=Discovery.ADAPTERS)

    protocol.discover(peer, strategy, torch.zeros(1, 1))  # type: ignore[arg-type]

    assert [j for j, _ in sent] == [0, 2, 3]
    first = sent[0][1]
    assert first is not None and all(enc is first for _, enc in sent)
    decoded = decode_tensors(first)
    assert all(torch.equal(decoded[k], adapter[k]) for k in adapter)


def test_every_message_type_states_whether_it_is_a_release_and_undeclared_releases_are_refused() -> (
    None
):
    """A DP peer's ledger records releases: each message type says where it is defined whether it
    is one, and a release the running strategy did not declare is refused (fail closed)."""
    from unittest.mock import MagicMock

    from secure_pcft.collab.strategy import make_strategy
    from secure_pcft.config import StrategyConfig
    from secure_pcft.errors import PrivacyError
    from secure_pcft.privacy.peer_privacy import PeerPrivacy

    assert {t for t in MessageType if t.release} == {
        MessageType.ADAPTER, MessageType.SIGNATURE, MessageType.HE_ANSWER
    }  # fmt: skip
    assert all(isinstance(t.release, bool) for t in MessageType)

    def releases(name: str, secure: bool) -> set[str]:
        return set(map(str, make_strategy(StrategyConfig(name=name)).releases(secure=secure)))

    assert releases("local", False) == set()
    assert releases("fedavg", True) == {"adapter"}
    assert releases("predictions", False) == {"adapter", "signature"}
    assert releases("predictions", True) == {"adapter", "he-answer"}  # no signature in clear
    assert releases("validation", True) == {"adapter", "he-answer"}

    privacy = MagicMock(spec=PeerPrivacy)  # class attributes only: touching the ledger would fail
    privacy.peer_id = "peer-0"
    privacy.declared = ("none yet", frozenset())
    with pytest.raises(PrivacyError, match="does not declare releasing 'adapter'"):
        PeerPrivacy.authorize(privacy, "adapter", "peer-1", release=True)
    PeerPrivacy.declare_releases(privacy, "fedavg", releases("fedavg", False))
    with pytest.raises(PrivacyError, match="'fedavg' does not declare releasing 'signature'"):
        PeerPrivacy.authorize(privacy, "signature", "peer-1", release=True)
    assert PeerPrivacy.authorize(privacy, "he-context", "peer-1", release=False) is True
