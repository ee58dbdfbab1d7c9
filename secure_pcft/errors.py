"""One exception hierarchy for the whole toolkit.

Security checks raise one of these; they never return ``None``/``False`` for a caller to forget.
Messages name the field, peer or limit that failed, never keys, plaintext adapters or private text.
"""

from __future__ import annotations


class SecurePcftError(Exception):
    """Root of every error the toolkit raises on purpose."""


class ConfigError(SecurePcftError, ValueError):
    """A configuration value is missing, malformed or out of range (the message names field and unit)."""


class RegistryError(ConfigError):
    """A registration was refused: a name a config could not spell, or one already taken (a
    strategy, attack, data source or accountant; ``force=True`` replaces on purpose)."""


class DataError(SecurePcftError):
    """A corpus or data file cannot be read or split as asked."""


class ModelError(SecurePcftError):
    """A base model or tokenizer cannot be loaded, built or adapted."""


class CorruptFileError(SecurePcftError):
    """A file on disk (adapter, ledger, key file, cache) is truncated, tampered with or undecodable."""


class UnknownPeerError(SecurePcftError, KeyError):
    """A peer id is not part of the run or the roster."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else "unknown peer"


class MessageError(SecurePcftError):
    """A message on the wire is malformed, undecodable or violates the protocol."""


class AdapterRejectedError(MessageError):
    """A received adapter has the wrong tensors, shapes or dtypes, NaN/Inf values or an excessive norm."""


class AuthenticationError(MessageError):
    """A signature, key or sender identity does not verify against the pinned roster."""


class ReplayError(MessageError):
    """A message was seen before, is out of its sequence/round window, or carries a stale timestamp."""


class StrategyError(SecurePcftError):
    """A trust strategy cannot compute its weights from what it was given."""


class PrivacyError(SecurePcftError):
    """A differential-privacy mechanism or accountant was misconfigured or misused."""


class BudgetExhaustedError(PrivacyError):
    """A release would exceed the peer's (ε, δ) budget; nothing was released."""


class LedgerError(PrivacyError, CorruptFileError):
    """The privacy ledger is tampered with, truncated or inconsistent."""


class CryptoError(SecurePcftError):
    """A cryptographic operation (HE, sealing, key handling) failed or was misused."""


class InsecureKeyFileError(CryptoError):
    """A key file is not a regular file owned by us, or is readable/writable by group or others."""


class UnknownSenderError(AuthenticationError):
    """An envelope names a sender key that is not pinned in the roster."""


class BadSignatureError(AuthenticationError):
    """An envelope's Ed25519 signature does not verify against the sender's pinned key."""


class WrongRecipientError(AuthenticationError):
    """A correctly signed envelope was addressed to another peer (forwarded or misrouted)."""


class BodyDecryptionError(AuthenticationError):
    """A signed envelope's body does not decrypt under the pinned sender/recipient box keys."""


class WireVersionError(MessageError):
    """An envelope in a wire format version this peer does not accept (e.g. v1 after v2)."""


class OversizeMessageError(MessageError):
    """A message or body exceeds the configured size limit (bytes)."""


class StaleTimestampError(ReplayError):
    """An envelope's timestamp lies outside the allowed clock skew (too old or in the future)."""


class RoundWindowError(ReplayError):
    """An envelope's round lies outside the receiver's accepted round window."""


class QueryLimitError(MessageError):
    """A peer asked more encrypted-similarity queries in one round than the responder allows."""


class LedgerBusyError(LedgerError):
    """Another process (or another handle in this one) already holds the ledger's writer lock."""


class BudgetInfeasibleError(ConfigError, PrivacyError):
    """The privacy budget cannot be met at all (absurd calibrated σ, or the first release alone exceeds it)."""


class AuditError(SecurePcftError):
    """An audit (attack, canary, ε lower bound) lacks what it needs or was asked something unsound."""


class ReportError(SecurePcftError):
    """A compliance report cannot be built: a run directory or audit file is missing or malformed."""
