"""The one message layer every peer-to-peer exchange goes through.

Wire layout (all integers big-endian)::

    b"SPCM" | u8 version | u32 header_len | header (canonical JSON, UTF-8) | safetensors bytes

The header carries the message type, sender, recipient, round, free JSON metadata and the length of
the tensor section. Tensors are safetensors; metadata is JSON. Nothing is ever unpickled, and every
malformed input raises :class:`MessageError` (TM-02, TM-03).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from secure_pcft import bounded_json
from secure_pcft.errors import MessageError

MAGIC = b"SPCM"
VERSION = 1
_PREFIX = struct.Struct(">4sBI")
MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
# The header's own fields are at depth 1 and meta at depth 2; meta is a flat record in practice.
HEADER_LIMITS = bounded_json.JsonLimits(max_bytes=MAX_HEADER_BYTES, max_depth=16)


class MessageType(StrEnum):
    """What a message carries, and whether it is a *release*.

    A release carries content derived from the sender's private data (through its DP model): with
    DP on, it is recorded in the sender's ledger before it leaves (``PeerPrivacy.authorize``), and
    only if the running strategy declares it (``TrustStrategy.releases``). Every member states its
    classification where it is defined, so a new type cannot be added unclassified.
    """

    release: bool

    def __new__(cls, value: str, release: bool) -> MessageType:
        member = str.__new__(cls, value)
        member._value_ = value
        member.release = release
        return member

    @classmethod
    def of(cls, value: object) -> MessageType:
        """The member whose wire value is ``value``.

        Raises:
            ValueError: no member has it.
        """
        for member in cls:
            if member.value == value:
                return member
        raise ValueError(f"unknown message type {value!r}")

    ADAPTER = "adapter", True  # a peer's LoRA tensors
    SIGNATURE = "signature", True  # prediction signature on the public reference set
    HE_ANSWER = "he-answer", True  # encrypted, masked similarity answer (of the answerer's vector)
    # not releases: post-processing of released or encrypted scores, public or the asker's own
    ADAPTER_REQUEST = "adapter-request", False  # "please send me your adapter this round"
    DECLINE = "decline", False  # refusal of a request (no consent, budget exhausted, ...)
    HE_CONTEXT = "he-context", False  # public CKKS context (no secret key)
    HE_QUERY = "he-query", False  # similarity query encrypted under the asker's own key


# What may travel in a public message (recipient BROADCAST, signed but not encrypted): what any
# peer and the relay may read. Channels refuse to publish, and refuse to accept in public, anything
# else.
PUBLIC_MESSAGE_TYPES = frozenset({MessageType.HE_CONTEXT})


@dataclass(frozen=True)
class Message:
    """A decoded message. ``tensors`` are CPU tensors; ``meta`` is JSON-compatible.

    ``encoded`` is a sender-side cache: ``encode_tensors(tensors)`` computed once when the same
    tensors go to many recipients (one adapter to N - 1 peers), so each recipient's message reuses
    the bytes instead of serialising again. Never set on a received message.
    """

    msg_type: MessageType
    sender: str
    recipient: str
    round: int
    meta: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    encoded: bytes | None = field(default=None, repr=False, compare=False)


def encode_tensors(tensors: dict[str, torch.Tensor]) -> bytes:
    """Serialise tensors with safetensors (contiguous CPU copies)."""
    return st_save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})


def decode_tensors(data: bytes) -> dict[str, torch.Tensor]:
    """Parse safetensors bytes.

    Raises:
        MessageError: the bytes are not a valid safetensors blob.
    """
    if not data:
        return {}
    try:
        return dict(st_load(data))
    except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
        raise MessageError(f"undecodable tensor section: {type(exc).__name__}") from exc


def encode_message(msg: Message) -> bytes:
    """Serialise a message to bytes (see the module docstring for the layout)."""
    if msg.encoded is not None:
        body = msg.encoded
    else:
        body = encode_tensors(msg.tensors) if msg.tensors else b""
    header = {
        "type": str(msg.msg_type),
        "sender": msg.sender,
        "recipient": msg.recipient,
        "round": msg.round,
        "meta": msg.meta,
        "body_len": len(body),
    }
    raw = json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    if len(raw) > MAX_HEADER_BYTES:
        raise MessageError(f"message header is {len(raw)} bytes, over {MAX_HEADER_BYTES}")
    return _PREFIX.pack(MAGIC, VERSION, len(raw)) + raw + body


def decode_message(data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Message:
    """Parse bytes into a :class:`Message`.

    The header is parsed within :data:`HEADER_LIMITS` (64 KiB, depth 16, number literals of at
    most 64 characters, no NaN/Infinity or duplicate keys) before ``json.loads`` sees it.

    Raises:
        MessageError: oversize, bad magic/version, truncated, malformed header or tensor section.
    """
    if len(data) > max_bytes:
        raise MessageError(f"message is {len(data)} bytes, over the {max_bytes}-byte limit")
    if len(data) < _PREFIX.size:
        raise MessageError("message is truncated (no prefix)")
    magic, version, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise MessageError("not a secure-pcft message (bad magic)")
    if version != VERSION:
        raise MessageError(f"unsupported message version {version}")
    if header_len > MAX_HEADER_BYTES or _PREFIX.size + header_len > len(data):
        raise MessageError("message header length is out of bounds")
    raw_header = data[_PREFIX.size : _PREFIX.size + header_len]
    header = bounded_json.loads(raw_header, HEADER_LIMITS, MessageError, "message header")
    msg_type, sender, recipient, rnd, meta, body_len = _check_header(header)
    body = data[_PREFIX.size + header_len :]
    if len(body) != body_len:
        raise MessageError(f"tensor section is {len(body)} bytes, header says {body_len}")
    return Message(msg_type, sender, recipient, rnd, meta, decode_tensors(body))


def _check_header(header: Any) -> tuple[MessageType, str, str, int, dict[str, Any], int]:
    if not isinstance(header, dict):
        raise MessageError("message header must be a JSON object")
    expected = {"type", "sender", "recipient", "round", "meta", "body_len"}
    if set(header) != expected:
        raise MessageError("message header has missing or unexpected fields")
    try:
        msg_type = MessageType.of(header["type"])
    except ValueError as exc:
        raise MessageError("unknown message type") from exc
    sender, recipient, rnd = header["sender"], header["recipient"], header["round"]
    meta, body_len = header["meta"], header["body_len"]
    if not (isinstance(sender, str) and sender and isinstance(recipient, str) and recipient):
        raise MessageError("sender and recipient must be non-empty strings")
    for name, value in (("round", rnd), ("body_len", body_len)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise MessageError(f"header field {name} must be a non-negative integer")
    if not isinstance(meta, dict):
        raise MessageError("header field meta must be an object")
    return msg_type, sender, recipient, rnd, meta, body_len
