"""The hello: a peer proves which roster identity runs behind a Flower node.

The relay sends every node a fresh random challenge; the peer answers with its peer id and an
Ed25519 signature (its pinned roster key) over a domain tag, the challenge, its peer id, the
Flower node id and the run configuration's digest. The relay verifies it against the roster before
it routes anything to that node, so a node cannot take over another peer's mailbox. Peers do not
rely on this mapping for security: every envelope is signed and sealed end to end (TM-03,
TM-04).
"""

from __future__ import annotations

import secrets

from nacl.exceptions import BadSignatureError as NaclBadSignature
from nacl.signing import VerifyKey

from secure_pcft.crypto.identity import Identity
from secure_pcft.crypto.roster import Roster
from secure_pcft.errors import UnknownPeerError
from secure_pcft.runtime.flower.errors import HelloError

_DOMAIN = b"secure-pcft/flower-hello/v1"


def new_challenge() -> str:
    """32 random bytes from the OS CSPRNG, hex."""
    return secrets.token_hex(32)


def _statement(challenge: str, peer_id: str, node_id: int, config_digest: str) -> bytes:
    return b"|".join(
        (
            _DOMAIN,
            challenge.encode(),
            peer_id.encode(),
            str(node_id).encode(),
            config_digest.encode(),
        )
    )


def sign_hello(identity: Identity, challenge: str, node_id: int, config_digest: str) -> str:
    """The peer's answer: hex Ed25519 signature over the hello statement."""
    return identity.sign(_statement(challenge, identity.name, node_id, config_digest)).hex()


def verify_hello(
    roster: Roster, peer_id: str, signature_hex: str, challenge: str, node_id: int, digest: str
) -> None:
    """Check a hello against the pinned roster.

    Raises:
        HelloError: unknown peer id, malformed or wrong signature.
    """
    try:
        public = roster.get(peer_id)
    except UnknownPeerError as exc:
        raise HelloError(f"hello from node {node_id}: {peer_id!r} is not on the roster") from exc
    try:
        signature = bytes.fromhex(signature_hex)
        VerifyKey(public.sign_pk).verify(_statement(challenge, peer_id, node_id, digest), signature)
    except (ValueError, TypeError, NaclBadSignature) as exc:
        raise HelloError(f"hello from node {node_id} as {peer_id!r}: bad signature") from exc
