"""Typed errors of the Flower runtime (children of the one root, :class:`SecurePcftError`).

They live here rather than in ``secure_pcft/errors.py`` because only this optional runtime raises
them; each derives from the root's matching family.
"""

from __future__ import annotations

from secure_pcft.errors import AuthenticationError, CorruptFileError, MessageError, SecurePcftError


class StateError(CorruptFileError):
    """A site's saved peer state is missing, torn, from another run configuration, or malformed."""


class RelayRecordError(MessageError):
    """A Flower record between relay and peer is malformed (wrong fields, types or sizes)."""


class HelloError(AuthenticationError):
    """A peer's hello does not verify against the pinned roster (or claims a taken peer id)."""


class DeploymentError(SecurePcftError):
    """A SuperLink/SuperNode/app process could not be set up, started or reached in time."""
