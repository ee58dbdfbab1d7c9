"""Identities, roster, sealed envelopes, adapter checks and encrypted similarity.

The safe layer: callers pass identities, rosters, policies and vectors; nonces, keys, CKKS
parameters and noise stay inside (vetted parameters live in the private ``_params`` module).
"""

from secure_pcft.crypto.adapter_checks import AdapterSpec, TensorSpec, check_adapter, decode_adapter
from secure_pcft.crypto.envelope import (
    EnvelopeHeader,
    Inbox,
    InboxPolicy,
    OpenedMessage,
    Sealer,
)
from secure_pcft.crypto.he_similarity import (
    ResponderPolicy,
    SimilarityAsker,
    SimilarityResponder,
)
from secure_pcft.crypto.identity import Identity, PublicIdentity, fingerprint_of
from secure_pcft.crypto.projection import ProjectionSpec, project, sketch
from secure_pcft.crypto.roster import Roster

__all__ = [
    "AdapterSpec",
    "EnvelopeHeader",
    "Identity",
    "Inbox",
    "InboxPolicy",
    "OpenedMessage",
    "ProjectionSpec",
    "PublicIdentity",
    "ResponderPolicy",
    "Roster",
    "Sealer",
    "SimilarityAsker",
    "SimilarityResponder",
    "TensorSpec",
    "check_adapter",
    "decode_adapter",
    "fingerprint_of",
    "project",
    "sketch",
]
