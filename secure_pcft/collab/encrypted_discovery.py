"""Encrypted peer discovery: every peer learns its cosine with every other peer, and nothing more.

Per ordered pair (asker i, responder j), through the peers' (secure) channels, as messages:

1. ``HE_CONTEXT`` (once per session, ~0.36 MB): i's public CKKS context (its public key only: no
   secret, Galois or relinearisation keys). i generates and serialises one context per session
   and *publishes* it: one signed, unencrypted public envelope that the transport (the relay)
   fans out to every peer, so a peer uploads 0.36 MB per session whatever N (point to point it
   sent N − 1 copies: 22.9 MB at 64 peers). j validates it against the vetted parameters and
   caches it under i's roster fingerprint. Every responder still needs every asker's public key,
   so a peer *receives* N − 1 contexts per session. A peer whose process restarted gets the
   contexts again, sealed point to point.
2. ``HE_QUERY`` (every round, ~235 kB): Enc_i(v_i), i's unit vector.
3. ``HE_ANSWER`` (~131 kB): Enc_i(v_i ⊙ v_j + mask) whose slot sum is ⟨v_i, v_j⟩ + η and whose
   other content is uniform — no rotations; re-randomised, masked and noise-flooded by j
   (:class:`~secure_pcft.crypto.he_similarity.SimilarityResponder`, which also caps the answers per
   asker per round). i decrypts and sums the slots: the cosine.

Ciphertexts and contexts travel as uint8 tensors inside ordinary :class:`Message` bodies
(safetensors; no pickle), so every byte goes through the envelopes and the traffic meter. The
round's steps (:mod:`secure_pcft.collab.round`) send contexts inside the meter's session scope, so
they are counted apart from the per-round cost. A peer that does not answer (or whose answer is
rejected) has no score: NaN.

Threats mitigated (threat_models/): similarity discovery leaking adapters or signatures to a
curious peer (TM-01), the network (TM-03) or the relay (TM-04) — only ciphertexts leave a peer; a
peer probing another's vector with many queries (TM-02), or several colluders doing so (TM-05).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import torch

from secure_pcft.collab.channel import Rejection
from secure_pcft.collab.messages import Message, MessageType, encode_tensors
from secure_pcft.collab.peer import Peer
from secure_pcft.crypto.he_similarity import ResponderPolicy, SimilarityAsker, SimilarityResponder
from secure_pcft.errors import MessageError, SecurePcftError

log = logging.getLogger(__name__)

HE_TENSOR = "bytes"  # the one tensor of an HE message: the serialised TenSEAL object as uint8


def bytes_tensor(data: bytes) -> dict[str, torch.Tensor]:
    """Wrap serialised bytes as a message's tensor section (one 1-D uint8 tensor)."""
    return {HE_TENSOR: torch.frombuffer(bytearray(data), dtype=torch.uint8)}


def tensor_bytes(msg: Message) -> bytes:
    """The bytes carried by an HE message.

    Raises:
        MessageError: the tensor section is not exactly one 1-D uint8 tensor named ``bytes``.
    """
    t = msg.tensors.get(HE_TENSOR)
    if set(msg.tensors) != {HE_TENSOR} or t is None or t.dtype != torch.uint8 or t.ndim != 1:
        raise MessageError(f"{msg.msg_type} message must carry one 1-D uint8 tensor {HE_TENSOR!r}")
    return t.numpy().tobytes()


class PeerHe:
    """One peer's encrypted-similarity state for a session: its CKKS keys (as asker), the contexts
    it cached (as responder), and the peers it already sent its context to.

    The asker's keys are generated lazily (~0.35 s), only when a strategy needs discovery.
    """

    def __init__(self, policy: ResponderPolicy) -> None:
        self._policy = policy
        self._asker: SimilarityAsker | None = None
        self.responder = SimilarityResponder(policy)
        self.contexts_sent: set[str] = set()

    @property
    def asker(self) -> SimilarityAsker:
        if self._asker is None:
            self._asker = SimilarityAsker()
        return self._asker

    def new_session(self) -> None:
        """Forget cached contexts and query counts (the CKKS keys are kept)."""
        self.responder = SimilarityResponder(self._policy)
        self.contexts_sent.clear()


def _reject(peer: Peer, sender: str, exc: SecurePcftError) -> None:
    peer.channel.rejections.append(Rejection(sender, type(exc).__name__, str(exc)))
    log.warning(
        "%s rejected a message from %s: %s (%s)", peer.peer_id, sender, exc, type(exc).__name__
    )


def _incoming(peer: Peer, rnd: int, expected: tuple[MessageType, ...]) -> list[Message]:
    """Messages of the expected types for this round; anything else is rejected."""
    out = []
    for msg in peer.channel.receive():
        try:
            if msg.sender not in peer.peer_ids:
                raise MessageError("sender is not a peer of this run")
            if msg.round != rnd:
                raise MessageError(f"message for round {msg.round} during round {rnd}")
            if msg.msg_type not in expected:
                raise MessageError(f"unexpected {msg.msg_type} message during discovery")
        except MessageError as exc:
            _reject(peer, msg.sender, exc)
            continue
        out.append(msg)
    return out


# ---- one peer's share of each step (collab/round.py runs them, in either runtime) -------------
def send_contexts(peer: Peer, agent: PeerHe) -> None:
    """Give this peer's public CKKS context to every peer that does not have it yet.

    The first time in a session it is published once (a signed public envelope the transport
    fans out to every peer); later, only peers that lost it (a restarted process) get it again,
    each sealed point to point.
    """
    others = [j for j in range(len(peer.peer_ids)) if j != peer.index]
    missing = [j for j in others if peer.peer_ids[j] not in agent.contexts_sent]
    if not missing:
        return
    context = bytes_tensor(agent.asker.public_context())  # serialised once (~0.36 MB)
    encoded = encode_tensors(context)
    if len(missing) == len(others):
        peer.publish(MessageType.HE_CONTEXT, context, encoded=encoded)
    else:
        for j in missing:
            peer.send(j, MessageType.HE_CONTEXT, context, encoded=encoded)
    agent.contexts_sent.update(peer.peer_ids[j] for j in missing)


def send_queries(peer: Peer, vector: npt.NDArray[np.float64], agent: PeerHe) -> None:
    """Send Enc(own unit vector) to every other peer."""
    query = bytes_tensor(agent.asker.query(vector))
    encoded = encode_tensors(query)
    for j in range(len(peer.peer_ids)):
        if j != peer.index:
            peer.send(j, MessageType.HE_QUERY, query, encoded=encoded)


def respond(
    peer: Peer,
    vector: npt.NDArray[np.float64],
    rnd: int,
    agent: PeerHe,
    fingerprint: Callable[[str], str],
) -> None:
    """Read the contexts and queries delivered to this peer and answer each valid query."""
    for msg in _incoming(peer, rnd, (MessageType.HE_CONTEXT, MessageType.HE_QUERY)):
        try:
            fp = fingerprint(msg.sender)
            if msg.msg_type is MessageType.HE_CONTEXT:
                agent.responder.register_context(fp, tensor_bytes(msg))
                continue
            answer = agent.responder.answer(fp, rnd, tensor_bytes(msg), vector)
        except SecurePcftError as exc:
            _reject(peer, msg.sender, exc)
            continue
        peer.send(peer.peer_ids.index(msg.sender), MessageType.HE_ANSWER, bytes_tensor(answer))


def collect_answers(peer: Peer, rnd: int, agent: PeerHe) -> torch.Tensor:
    """Decrypt the answers delivered to this peer: its row of cosines (NaN where none arrived),
    each clipped to [-1, 1]; the diagonal is 1."""
    cos = torch.full((len(peer.peer_ids),), float("nan"), dtype=torch.float64)
    for msg in _incoming(peer, rnd, (MessageType.HE_ANSWER,)):
        j = peer.peer_ids.index(msg.sender)
        try:
            if j == peer.index or not torch.isnan(cos[j]):
                raise MessageError("unsolicited or duplicate similarity answer")
            cos[j] = min(1.0, max(-1.0, agent.asker.decrypt(tensor_bytes(msg))))
            peer.keep_receipt(msg)  # a DP responder's signed ledger head rides on its answer
        except SecurePcftError as exc:
            _reject(peer, msg.sender, exc)
    cos[peer.index] = 1.0
    return cos
