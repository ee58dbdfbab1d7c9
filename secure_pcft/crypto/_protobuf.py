"""Hazmat: the few protobuf wire-format operations needed to edit TenSEAL's serialised objects.

TenSEAL serialises contexts and vectors as small protobuf messages (``TenSEALContextProto``,
``CKKSVectorProto``) whose fields hold SEAL's own serialised objects. :mod:`he_similarity` and
:mod:`ckks_mask` split and re-join those messages to replace one field with bytes of our own;
the result is always parsed back by TenSEAL's loader. Only our own bytes are edited this way.
"""

from __future__ import annotations

from secure_pcft.errors import CryptoError

Field = tuple[int, int, bytes]


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise CryptoError("truncated protobuf varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def proto_fields(buf: bytes) -> list[Field]:
    """Split a protobuf message into (field number, wire type, raw value bytes)."""
    fields: list[Field] = []
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            start = pos
            _, pos = read_varint(buf, pos)
            value = buf[start:pos]
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            value, pos = buf[pos : pos + size], pos + size
        elif wire_type == 2:
            size, pos = read_varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise CryptoError(f"unsupported protobuf wire type {wire_type}")
        if pos > len(buf):
            raise CryptoError("truncated protobuf field")
        fields.append((number, wire_type, value))
    return fields


def proto_encode(fields: list[Field]) -> bytes:
    out = bytearray()
    for number, wire_type, value in fields:
        out += varint((number << 3) | wire_type)
        if wire_type == 2:
            out += varint(len(value))
        out += value  # varint / fixed values are kept as their raw bytes
    return bytes(out)
