"""Field checks for the validated config dataclasses: one error shape, ``[section] field: what``.

Every ``__post_init__`` of a configuration (run config, small-base spec, audit campaign, canaries)
and the attacks' keyword parameters state their rules as ``require(condition, section, field,
what)`` (or :func:`require_int` for a bounded integer); a broken rule raises :class:`ConfigError`
whose message names the table, the field and the expected value with its unit. :func:`is_int` is
also used by checks that raise other error types (the privacy ledger's events).
"""

from __future__ import annotations

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
