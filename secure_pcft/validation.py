"""Field checks for the validated config dataclasses: one error shape, ``[section] field: what``.

Every ``__post_init__`` of a configuration (run config, small-base spec, audit campaign) states its
rules as ``require(condition, section, field, what)``; a broken rule raises :class:`ConfigError`
whose message names the table, the field and the expected value with its unit.
"""

from __future__ import annotations

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


def is_int(value: object) -> bool:
    """True for an ``int`` that is not a ``bool`` (TOML ``true`` must not pass as ``1``)."""
    return isinstance(value, int) and not isinstance(value, bool)
