"""The one way the toolkit's registries take an entry (strategies, attacks, data sources,
accountants): a name a config can spell (``config.REGISTRY_NAME``), never a silent overwrite.

Each registry keeps its own dict (it lives next to what it registers) and calls :func:`claim`;
refusals are :class:`~secure_pcft.errors.RegistryError` (a :class:`ConfigError`: exit 3).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import TypeVar

from secure_pcft.config import REGISTRY_NAME
from secure_pcft.errors import RegistryError

V = TypeVar("V")


def claim(registry: MutableMapping[str, V], kind: str, name: str, value: V, force: bool) -> V:
    """Put ``value`` under ``name`` in ``registry`` (a ``kind``: "strategy", "attack", ...).

    Raises:
        RegistryError: ``name`` is not a registry name, or it is taken by another value and
            ``force`` is false.
    """
    if not isinstance(name, str) or not REGISTRY_NAME.fullmatch(name):
        raise RegistryError(
            f"{kind} name {name!r}: lower-case letters, digits, '-' and '_', starting with a "
            "letter, at most 64 characters (what a config can name)"
        )
    if name in registry and registry[name] is not value and not force:
        raise RegistryError(
            f"{kind} {name!r} is already registered (pass force=True to replace it)"
        )
    registry[name] = value
    return value
