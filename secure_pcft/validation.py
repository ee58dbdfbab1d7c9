"""Field checks for the validated config dataclasses: one error shape, ``[section] field: what``.

Every ``__post_init__`` of a configuration (run config, small-base spec, audit campaign, canaries)
and the attacks' keyword parameters state their rules as ``require(condition, section, field,
what)`` (or :func:`require_int` for a bounded integer); a broken rule raises :class:`ConfigError`
whose message names the table, the field and the expected value with its unit. :func:`is_int` is
also used by checks that raise other error types (the privacy ledger's events).
"""

from __future__ import annotations

import math
from typing import TypeGuard

from secure_pcft.errors import ConfigError


def require(cond: bool, section: str, name: str, what: str) -> None:
    """Raise unless ``cond`` holds.

    Args:
        cond: the rule, evaluated by the caller.
        section: the TOML table (``data``, ``target.update``, ``small_base``).
        name: the field (or fields) the rule is about.
        what: the expected value, with its unit (``"tokens >= 8"``).

    Raises:
        ConfigError: ``[section] name: what`` when ``cond`` is false.
    """
    if not cond:
        raise ConfigError(f"[{section}] {name}: {what}")


def is_int(value: object) -> TypeGuard[int]:
    """True for an ``int`` that is not a ``bool`` (TOML ``true`` must not pass as ``1``)."""
    return isinstance(value, int) and not isinstance(value, bool)


def require_int(value: object, section: str, name: str, low: int, unit: str = "") -> int:
    """Return ``value`` if it is an ``int`` (not a ``bool``) >= ``low``.

    Args:
        value: the field's value, of any type.
        section: the TOML table (``canaries``, ``attack``).
        name: the field.
        low: the smallest accepted value.
        unit: what the number counts (``"number of shadow adapters"``), put before the bound.

    Raises:
        ConfigError: ``[section] name: unit, an integer >= low`` (without ``unit, `` if empty).
    """
    if is_int(value) and value >= low:
        return value
    what = f"{unit}, an integer >= {low}" if unit else f"an integer >= {low}"
    raise ConfigError(f"[{section}] {name}: {what}")


def in_range(
    value: object, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> bool:
    """True for a finite real number (not a ``bool``) in [low, high] (ends open as asked).

    Every numeric setting that guards a protection is bounded on both sides: an infinite or absurd
    value (a clock skew of 10⁹ s, a norm ratio of 1e300, a learning rate of ∞) would switch the
    protection off while looking like a number.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        x = float(value)
    except OverflowError:  # an int too large for a float
        return False
    if not math.isfinite(x):
        return False
    above = x > low if low_open else x >= low
    below = x < high if high_open else x <= high
    return above and below


def require_range(
    value: object,
    section: str,
    name: str,
    low: float,
    high: float,
    unit: str,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise unless ``value`` is a finite number in the range, naming the range and its unit.

    Raises:
        ConfigError: ``[section] name: <unit> in [low, high], got <value>``.
    """
    if not in_range(value, low, high, low_open=low_open, high_open=high_open):
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "…"
        raise ConfigError(f"[{section}] {name}: {unit} in {lo}{low:g}, {high:g}{hi}, got {shown}")
