"""JSON from outside, parsed within limits: every input ends in a typed error or a value.

Python's ``json`` raises ``RecursionError`` on deep nesting, ``ValueError`` (not a ``JSONDecodeError``)
on integers beyond the int-string conversion limit (4300 digits), and silently accepts ``NaN``,
``Infinity``, ``1e999`` (→ inf) and duplicate keys (the last one wins). :func:`loads` checks size, nesting
depth and number length on the raw text first — with regular expressions and one flat loop over the
brackets, so nothing recurses — and only then calls ``json.loads``; any error left is converted to the
caller's own error class (``MessageError``, ``CorruptFileError``, ...), so callers keep catching what
they caught before.

Threats mitigated (threat_models/): oversize or malformed input from a roster member or a relay
(TM-02, TM-04); a tampered file on disk that would crash a reader instead of failing closed.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from secure_pcft.errors import ConfigError, SecurePcftError

# A JSON string, escapes included. Possessive quantifiers: linear time, no backtracking. An
# unterminated string does not match; its bytes are then scanned as structure (json.loads rejects it).
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_A_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_OPENERS = frozenset(b"[{")
# Above this depth ``json.loads`` could recurse into the interpreter's recursion limit.
_DEPTH_CEILING = 200
# Below the interpreter's int-string conversion limit (4300 digits), so int() never raises.
_NUMBER_CEILING = 4000


@dataclass(frozen=True)
class JsonLimits:
    """What one JSON document may be.

    Attributes:
        max_bytes: largest document, bytes (UTF-8).
        max_depth: deepest nesting of arrays and objects (``[]`` is depth 1).
        max_number_chars: longest number literal outside strings, characters (sign, digits, ``.``,
            exponent); a float's ``repr`` has at most 24, an unsigned 64-bit integer 20.
        strict: the format is written by this toolkit (``allow_nan=False``, dicts): refuse the
            constants ``NaN``/``Infinity``, floats that overflow to ±inf, duplicate keys and
            strings with lone surrogates.
    """

    max_bytes: int
    max_depth: int = 32
    max_number_chars: int = 64
    strict: bool = True

    def __post_init__(self) -> None:
        if type(self.max_bytes) is not int or self.max_bytes < 2:
            raise ConfigError("json limits max_bytes: must be an integer >= 2 (bytes)")
        if type(self.max_depth) is not int or not 1 <= self.max_depth <= _DEPTH_CEILING:
            raise ConfigError(f"json limits max_depth: must be an integer in [1, {_DEPTH_CEILING}]")
        if (
            type(self.max_number_chars) is not int
            or not 1 <= self.max_number_chars <= _NUMBER_CEILING
        ):
            raise ConfigError(
                f"json limits max_number_chars: must be an integer in [1, {_NUMBER_CEILING}] (characters)"
            )


class _Refused(ValueError):
    """Raised from json's hooks; :func:`loads` turns it into the caller's error."""


def loads(data: bytes | str, limits: JsonLimits, error: type[SecurePcftError], what: str) -> Any:
    """Parse one JSON document from outside (received bytes, a file on disk).

    Args:
        data: the document; bytes must be UTF-8 (callers that need ASCII decode it themselves).
        limits: size, depth and number-length bounds; see :class:`JsonLimits`.
        error: the typed error to raise, e.g. :class:`~secure_pcft.errors.MessageError`.
        what: names the document in the error message (``"message header"``, a path).

    Returns:
        The parsed value (``dict``, ``list``, ``str``, ``int``, ``float``, ``bool`` or ``None``).

    Raises:
        SecurePcftError: of class ``error``, for oversize, too deep, too long a number, bad UTF-8,
            invalid JSON and — with ``limits.strict`` — NaN/Infinity, overflowing floats, duplicate
            keys or lone surrogates. Nothing else escapes (no ``RecursionError``, no bare ``ValueError``).
    """
    try:
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        if len(raw) > limits.max_bytes:
            raise _Refused(f"{len(raw)} bytes, over the {limits.max_bytes}-byte limit")
        _check_shape(raw, limits)
        text = raw.decode("utf-8")
        if limits.strict:
            value = json.loads(
                text,
                parse_float=_finite_float,
                parse_constant=_refuse_constant,
                object_pairs_hook=_unique_keys,
            )
            _check_strings(value)
            return value
        return json.loads(text)
    except _Refused as exc:
        raise error(f"{what}: {exc}") from None
    except (ValueError, RecursionError, TypeError) as exc:  # UnicodeError and JSONDecodeError too
        raise error(f"{what}: not valid UTF-8 JSON ({type(exc).__name__})") from None


def _check_shape(raw: bytes, limits: JsonLimits) -> None:
    """Depth and number length, on the text with every string blanked out (no recursion)."""
    skeleton = _STRING.sub(b'""', raw)
    depth = 0
    for byte in skeleton.translate(None, _NOT_A_BRACKET):
        if byte in _OPENERS:
            depth += 1
            if depth > limits.max_depth:
                raise _Refused(f"nesting deeper than {limits.max_depth}")
        else:
            depth -= 1  # unbalanced brackets are json.loads's to reject
    if _long_number(limits.max_number_chars).search(skeleton):
        raise _Refused(f"a number literal longer than {limits.max_number_chars} characters")


@lru_cache(maxsize=16)
def _long_number(max_chars: int) -> re.Pattern[bytes]:
    # Outside strings these characters occur only in numbers (and one 'e' in true/false).
    return re.compile(rb"[0-9.eE+\-]{%d,}" % (max_chars + 1))


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise _Refused("a number overflows to infinity")
    return value


def _refuse_constant(name: str) -> Any:
    raise _Refused(f"bare {name} is not JSON")


def _check_strings(value: Any) -> None:
    """Refuse lone surrogates (``"\\ud800"``): valid JSON, but such a str cannot be encoded as UTF-8."""
    stack = [value]  # depth is already bounded; a stack keeps this flat anyway
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            texts: list[Any] = [item]
        elif isinstance(item, dict):
            texts = list(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
            continue
        else:
            continue
        for text in texts:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise _Refused("a string holds a lone surrogate (not encodable as UTF-8)") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Refused("an object has duplicate keys")
    return obj
