"""Bounded JSON: every input ends in the caller's typed error or a value, never RecursionError/ValueError.

The two failures measured by the fuzz in issue 13 (nesting 10,000 deep: ``RecursionError`` from
``json.loads``; a 5,000-digit integer: a bare ``ValueError``) are reproduced against plain ``json``
first, so these tests fail if the guard is removed.
"""

from __future__ import annotations

import json

import pytest

from secure_pcft import bounded_json
from secure_pcft.bounded_json import JsonLimits
from secure_pcft.errors import ConfigError, CorruptFileError, LedgerError, MessageError

LIMITS = JsonLimits(max_bytes=1 << 20, max_depth=16, max_number_chars=64)
DEEP = b"[" * 10_000 + b"]" * 10_000
HUGE_INT = b'{"n": ' + b"7" * 5_000 + b"}"


def load(data: bytes | str, limits: JsonLimits = LIMITS) -> object:
    return bounded_json.loads(data, limits, MessageError, "doc")


def test_plain_json_fails_untyped_on_the_fuzz_cases() -> None:
    with pytest.raises(RecursionError):
        json.loads(DEEP)
    with pytest.raises(ValueError) as info:
        json.loads(HUGE_INT)
    assert not isinstance(info.value, json.JSONDecodeError)


def test_deep_nesting_is_a_typed_error() -> None:
    with pytest.raises(MessageError, match="nesting deeper than 16"):
        load(DEEP)


def test_long_integer_is_a_typed_error() -> None:
    with pytest.raises(MessageError, match="number literal longer than 64"):
        load(HUGE_INT)


@pytest.mark.parametrize("depth", [1, 8, 16])
def test_nesting_up_to_the_limit_parses(depth: int) -> None:
    doc = "[" * depth + "]" * depth

    value = load(doc)

    for _ in range(depth - 1):
        assert isinstance(value, list) and len(value) == 1
        value = value[0]
    assert value == []


def test_one_level_too_deep_is_refused() -> None:
    with pytest.raises(MessageError, match="nesting"):
        load("[" * 17 + "]" * 17)


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    doc = json.dumps({"s": "[[[[{{{{" * 100, "t": 'a "quoted" ]] \\ ' + "}" * 50})

    assert load(doc) == json.loads(doc)


def test_digits_inside_strings_do_not_count_as_numbers() -> None:
    doc = json.dumps({"id": "1" * 5000})

    assert load(doc) == {"id": "1" * 5000}


def test_oversize_is_refused_before_parsing() -> None:
    limits = JsonLimits(max_bytes=100)

    with pytest.raises(MessageError, match="over the 100-byte limit"):
        load(json.dumps({"x": "y" * 200}), limits)


@pytest.mark.parametrize(
    "doc, why",
    [
        ('{"x": NaN}', "NaN"),
        ('{"x": -Infinity}', "Infinity"),
        ('{"x": 1e999}', "overflows"),
        ('{"x": 1, "x": 2}', "duplicate keys"),
        ('{"x": ["\\udc00"]}', "lone surrogate"),
        ('{"\\ud800": 1}', "lone surrogate"),
    ],
)
def test_strict_refuses_what_this_toolkit_never_writes(doc: str, why: str) -> None:
    with pytest.raises(MessageError, match=why):
        load(doc)


def test_lenient_mode_keeps_json_semantics() -> None:
    lenient = JsonLimits(max_bytes=1024, strict=False)

    assert load('{"x": 1, "x": 2}', lenient) == {"x": 2}


@pytest.mark.parametrize(
    "data",
    [b"\xff\xfe{}", b'{"a": 1', b"[1, 2,]", b"", b"]]]][[[[", b'"unterminated', b"{'a': 1}"],
)
def test_malformed_input_is_the_callers_error(data: bytes) -> None:
    with pytest.raises(CorruptFileError, match=r"file\.json"):
        bounded_json.loads(data, LIMITS, CorruptFileError, "file.json")


def test_values_round_trip() -> None:
    obj = {"a": [1, -2.5, 1e-300, True, None, "é", "\U0001f600"], "b": {"c": 18446744073709551615}}

    assert load(json.dumps(obj)) == obj


@pytest.mark.parametrize(
    "kwargs",
    [{"max_bytes": 1}, {"max_bytes": 10, "max_depth": 0}, {"max_bytes": 10, "max_depth": 500}],
)
def test_limits_are_validated(kwargs: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        JsonLimits(**kwargs)


def test_message_header_refuses_deep_meta() -> None:
    from secure_pcft.collab.messages import _PREFIX, MAGIC, VERSION, decode_message

    header = (
        b'{"body_len":0,"meta":{"x":' + b"[" * 5000 + b"]" * 5000 + b'},"recipient":"b",'
        b'"round":0,"sender":"a","type":"adapter"}'
    )
    wire = _PREFIX.pack(MAGIC, VERSION, len(header)) + header

    with pytest.raises(MessageError, match="nesting"):
        decode_message(wire)


def test_ledger_line_with_a_huge_number_is_a_ledger_error() -> None:
    from secure_pcft.privacy.events import _decode

    with pytest.raises(LedgerError, match="ledger line 3"):
        _decode(HUGE_INT, 3)
    with pytest.raises(LedgerError, match="ledger line 4"):
        _decode(DEEP, 4)
