"""Two-party encrypted inner product (CKKS, TenSEAL): how peers score each other without showing
their sketches.

Protocol, per ordered pair (asker A, responder R), inside sealed envelopes:

1. Once per session, A sends ``asker.public_context()`` (~9 MB): public key + Galois keys for the 12
   slot-sum rotations, **no secret key**. R validates it against the vetted parameters and caches
   it under A's fingerprint (:meth:`SimilarityResponder.register_context`).
2. Each round, A sends ``asker.query(x)`` (~235 kB): its unit sketch, zero-padded to 4096 slots,
   encrypted under A's key.
3. R computes ``Enc(x)·y`` (plaintext multiply, then rotate-and-add over *all* 4096 slots so every
   slot holds the full inner product — a shorter sum would leave suffix sums, i.e. R's coordinates,
   in the other slots), adds a fresh public-key encryption of zero (re-randomises the ciphertext,
   whose components are otherwise a deterministic function of A's ciphertext and ``y``) and a
   Gaussian η ~ N(0, σ²), σ = 1e-4, identical in every slot (noise flooding), and returns it.
4. A decrypts ``⟨x, y⟩ + η + ε`` with ``|ε| ≲ 2e-6`` (measured max 1.6e-6).

Guarantees and limits (stated honestly):

* A learns the score (±σ); R learns nothing (IND-CPA of CKKS, 128-bit parameters).
* Flooding hides the low-order bits of the real part from a *semi-honest* asker, but
  σ/|ε| ≈ 60–300 is far from the 2^-λ statistical distance of formal circuit privacy, and the
  imaginary parts of the slots are not flooded beyond the fresh encryption's own error. A *malicious* asker can craft
  its ciphertext (complex values → two linear measurements per query) or its evaluation keys
  (large key-switching error that carries information about ``y``). Bound: each answer is a few
  linear measurements of R's sketch, so queries are capped per asker per round, and the sketch is
  post-processing of R's DP adapter (see DESIGN "privacy closure").

Threats mitigated (threat_models/): similarity discovery leaking adapters or scores to a curious
peer (TM-01) or the relay (TM-04); probing with chosen queries and malformed contexts (TM-02), also
from several colluding identities (TM-05, bounded per asker).
"""

from __future__ import annotations

import logging
import math
import os
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

import numpy as np
import numpy.typing as npt
import tenseal as ts
from tenseal import _ts_cpp

from secure_pcft.crypto import _params
from secure_pcft.errors import (
    ConfigError,
    CryptoError,
    MessageError,
    OversizeMessageError,
    QueryLimitError,
)

logger = logging.getLogger(__name__)

MAX_DIM = _params.SLOT_COUNT
_UNIT_TOLERANCE = 1e-6
_MAX_ANSWER_BYTES = 1024 * 1024  # an answer is ~131 kB
_CSPRNG = random.SystemRandom()


def _as_unit_vector(vector: Sequence[float] | npt.ArrayLike, who: str) -> list[float]:
    """Validate a local unit vector and zero-pad it to the slot count."""
    arr = np.asarray(vector, dtype=np.float64)
    if arr.ndim != 1 or not 1 <= arr.size <= MAX_DIM:
        raise CryptoError(f"{who}: expected a 1-D vector of 1..{MAX_DIM} numbers")
    if not np.isfinite(arr).all():
        raise CryptoError(f"{who}: vector contains NaN or Inf")
    if abs(float(np.linalg.norm(arr)) - 1.0) > _UNIT_TOLERANCE:
        raise CryptoError(f"{who}: vector must be L2-normalised (see projection.project)")
    padded = np.zeros(MAX_DIM, dtype=np.float64)
    padded[: arr.size] = arr
    return [float(v) for v in padded]


class SimilarityAsker:
    """The side that wants to know ⟨own sketch, responder's sketch⟩. Holds the CKKS secret key."""

    def __init__(self) -> None:
        self._ctx = _params.new_secret_context()
        self._public: bytes | None = None

    def __repr__(self) -> str:
        return "SimilarityAsker(<secret CKKS context>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("SimilarityAsker holds a CKKS secret key and cannot be pickled")

    def public_context(self) -> bytes:
        """Serialised public context (public key + slot-sum Galois keys, no secret key).

        Built once and reused: send it once per responder per session.
        """
        if self._public is None:
            try:
                self._public = _public_context_with_rotation_keys(self._ctx)
            except (CryptoError, RuntimeError, ValueError, TypeError, OSError) as exc:
                logger.warning("restricted Galois keys unavailable (%s); sending the full set", exc)
                full = self._ctx.copy()
                full.generate_galois_keys()
                self._public = full.serialize(
                    save_public_key=True,
                    save_secret_key=False,
                    save_galois_keys=True,
                    save_relin_keys=False,
                )
        return self._public

    def query(self, vector: Sequence[float] | npt.ArrayLike) -> bytes:
        """Encrypt a unit vector (length ≤ 4096, zero-padded) → serialised ciphertext (~235 kB)."""
        padded = _as_unit_vector(vector, "asker")
        return bytes(ts.ckks_vector(self._ctx, padded).serialize())

    def decrypt(self, answer: bytes) -> float:
        """Decrypt a responder's answer to the (noisy) inner product.

        Raises:
            OversizeMessageError: the answer is larger than any honest answer.
            MessageError: the answer does not deserialise under our context or is not a score.
        """
        if len(answer) > _MAX_ANSWER_BYTES:
            raise OversizeMessageError(
                f"similarity answer: {len(answer)} bytes exceeds {_MAX_ANSWER_BYTES}"
            )
        try:
            vec = ts.ckks_vector_from(self._ctx, bytes(answer))
            if vec.size() != 1:
                raise MessageError("similarity answer: expected an encrypted scalar")
            value = float(vec.decrypt()[0])
        except MessageError:
            raise
        except Exception:  # TenSEAL/SEAL raise assorted types on malformed input
            raise MessageError("similarity answer: not a ciphertext under our context") from None
        if not math.isfinite(value):
            raise MessageError("similarity answer: decrypts to a non-finite value")
        return value


@dataclass(frozen=True)
class ResponderPolicy:
    """Limits a responder enforces.

    Attributes:
        max_queries_per_round: answers per asker per round (each is a linear measurement).
        max_context_bytes: largest accepted public context, bytes.
        max_query_bytes: largest accepted query ciphertext, bytes.
    """

    max_queries_per_round: int = 1
    max_context_bytes: int = 32 * 1024 * 1024
    max_query_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("max_queries_per_round", "max_context_bytes", "max_query_bytes"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigError(f"similarity.{name}: must be a positive integer")


class SimilarityResponder:
    """Answers encrypted inner-product queries with its own (plaintext) sketch.

    Askers are keyed by an authenticated id (the envelope sender's fingerprint); their public
    contexts are cached for the session.
    """

    def __init__(self, policy: ResponderPolicy | None = None) -> None:
        self._policy = policy or ResponderPolicy()
        self._contexts: dict[str, ts.Context] = {}
        self._queries: dict[str, tuple[int, int]] = {}  # asker -> (round, answers given)

    def has_context(self, asker: str) -> bool:
        return asker in self._contexts

    def forget(self, asker: str) -> None:
        """Drop an asker's cached context (end of session)."""
        self._contexts.pop(asker, None)

    def register_context(self, asker: str, context: bytes) -> None:
        """Validate and cache ``asker``'s public context.

        Raises:
            OversizeMessageError: above ``policy.max_context_bytes``.
            MessageError: undecodable, carries a secret key, or deviates from the vetted parameters.
        """
        if len(context) > self._policy.max_context_bytes:
            raise OversizeMessageError(
                f"similarity context from {asker}: {len(context)} bytes exceeds "
                f"{self._policy.max_context_bytes}"
            )
        try:
            ctx = _params.load_context(bytes(context))
            problems = _params.context_problems(ctx)
        except Exception:  # TenSEAL/SEAL raise assorted types on malformed input
            raise MessageError(f"similarity context from {asker}: not a TenSEAL context") from None
        if problems:
            raise MessageError(f"similarity context from {asker}: {'; '.join(problems)}")
        # The asker controls these flags in the serialised context; pin the ones we rely on.
        ctx.auto_rescale = True
        ctx.auto_mod_switch = True
        ctx.auto_relin = True
        if asker in self._contexts:
            logger.info("replacing cached similarity context of %s", asker)
        self._contexts[asker] = ctx

    def answer(
        self, asker: str, round: int, query: bytes, own_vector: Sequence[float] | npt.ArrayLike
    ) -> bytes:
        """Compute Enc(⟨x, own_vector⟩ + η) for ``asker``'s query ``Enc(x)``.

        Args:
            asker: authenticated id of the asker (the one its context was registered under).
            round: current protocol round (answers are counted per asker per round).
            query: serialised ciphertext from :meth:`SimilarityAsker.query`.
            own_vector: this peer's unit sketch, shape ``(d,)``, d ≤ 4096.

        Raises:
            MessageError: no cached context, or a malformed / off-parameter query.
            QueryLimitError: the asker used up its answers for this round, or asks for an old round.
            OversizeMessageError: query above ``policy.max_query_bytes``.
            CryptoError: ``own_vector`` is not a finite unit vector.
        """
        ctx = self._contexts.get(asker)
        if ctx is None:
            raise MessageError(f"similarity query from {asker}: no public context registered")
        padded = _as_unit_vector(own_vector, "responder")
        self._count_query(asker, round)  # counted before any work: a malformed query still counts
        if len(query) > self._policy.max_query_bytes:
            raise OversizeMessageError(
                f"similarity query from {asker}: {len(query)} bytes exceeds "
                f"{self._policy.max_query_bytes}"
            )
        enc_x = self._load_query(ctx, asker, bytes(query))
        try:
            result = enc_x.dot(padded)
            # Fresh public-key encryption of zero: re-randomises both ciphertext components.
            result = result + ts.ckks_vector(ctx, [0.0])
            # Flood with one Gaussian added to every slot (plain constant encodes in all slots).
            result = result + _CSPRNG.normalvariate(0.0, _params.FLOOD_SIGMA)
            return bytes(result.serialize())
        except Exception:  # evaluation failures mean the query/context pair is unusable
            raise MessageError(f"similarity query from {asker}: evaluation failed") from None

    # ------------------------------------------------------------------ internals
    def _count_query(self, asker: str, round: int) -> None:
        if type(round) is not int or round < 0:
            raise ConfigError(f"round {round!r}: must be a non-negative integer")
        last_round, used = self._queries.get(asker, (-1, 0))
        if round < last_round:
            raise QueryLimitError(
                f"similarity query from {asker}: round {round} is older than {last_round}"
            )
        if round > last_round:
            used = 0
        if used >= self._policy.max_queries_per_round:
            raise QueryLimitError(
                f"similarity query from {asker}: more than {self._policy.max_queries_per_round} "
                f"per round (round {round})"
            )
        self._queries[asker] = (round, used + 1)

    @staticmethod
    def _load_query(ctx: ts.Context, asker: str, query: bytes) -> ts.CKKSVector:
        try:
            vec = ts.ckks_vector_from(ctx, query)
            cts = vec.ciphertext()
            ok = (
                vec.size() == _params.SLOT_COUNT
                and len(cts) == 1
                and cts[0].scale == _params.GLOBAL_SCALE
                and cts[0].size() == 2
                and not cts[0].is_transparent()
                and cts[0].parms_id() == ctx.seal_context().data.first_parms_id()
            )
        except Exception:  # TenSEAL/SEAL raise assorted types on malformed input
            raise MessageError(f"similarity query from {asker}: not a ciphertext") from None
        if not ok:
            raise MessageError(
                f"similarity query from {asker}: not a fresh {_params.SLOT_COUNT}-slot ciphertext "
                "at the vetted scale"
            )
        return vec


# ---------------------------------------------------------------------- hazmat: context bytes
def _public_context_with_rotation_keys(ctx: ts.Context) -> bytes:
    """Serialise ``ctx`` without secret key and with Galois keys for the slot-sum rotations only.

    TenSEAL's Python API only generates the default Galois key set (24 keys at N = 8192), but its
    serialised context is a small protobuf (``TenSEALContextProto``: field 2 = public part, whose
    field 5 = serialised SEAL GaloisKeys). We generate the 12 keys we need with SEAL's key
    generator and splice them in. Only our own bytes are edited; the responder parses the result
    with TenSEAL's own loader.
    """
    keygen = _ts_cpp.KeyGenerator(ctx.seal_context().data, ctx.secret_key().data)
    galois = _ts_cpp.GaloisKeys()
    keygen.create_galois_keys(list(_params.GALOIS_ELEMENTS), galois)
    with tempfile.TemporaryDirectory() as tmp:  # SEAL's binding saves to a path only
        path = os.path.join(tmp, "galois")
        galois.save(path)
        with open(path, "rb") as fh:
            galois_bytes = fh.read()
    base = ctx.serialize(
        save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=False
    )
    fields = _proto_fields(bytes(base))
    if [f for f, _, _ in fields].count(2) != 1 or any(f == 3 for f, _, _ in fields):
        raise CryptoError("unexpected TenSEAL context layout")
    out = []
    for number, wire_type, value in fields:
        if number == 2:
            public = _proto_fields(value)
            if any(f == 5 for f, _, _ in public):
                raise CryptoError("unexpected TenSEAL context layout")
            value = _proto_encode([*public, (5, 2, galois_bytes)])
        out.append((number, wire_type, value))
    blob = _proto_encode(out)
    check = _params.load_context(blob)
    if _params.context_problems(check):
        raise CryptoError("spliced public context does not validate")
    return blob


_Field = tuple[int, int, bytes]


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise CryptoError("truncated protobuf varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _proto_fields(buf: bytes) -> list[_Field]:
    """Split a protobuf message into (field number, wire type, raw value bytes)."""
    fields: list[_Field] = []
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            start = pos
            _, pos = _read_varint(buf, pos)
            value = buf[start:pos]
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            value, pos = buf[pos : pos + size], pos + size
        elif wire_type == 2:
            size, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise CryptoError(f"unsupported protobuf wire type {wire_type}")
        if pos > len(buf):
            raise CryptoError("truncated protobuf field")
        fields.append((number, wire_type, value))
    return fields


def _proto_encode(fields: list[_Field]) -> bytes:
    out = bytearray()
    for number, wire_type, value in fields:
        out += _varint((number << 3) | wire_type)
        if wire_type == 2:
            out += _varint(len(value))
        out += value  # varint / fixed values are kept as their raw bytes
    return bytes(out)
