"""Two-party encrypted inner product (CKKS, TenSEAL) without rotations: how peers score each
other without showing their sketches.

Protocol, per ordered pair (asker A, responder R), inside sealed envelopes:

1. Once per session, A sends ``asker.public_context()`` (~0.36 MB): the public key only — no
   secret key, no Galois or relinearisation keys (nothing A sends is ever used for key
   switching). R validates it against the vetted parameters and caches it under A's fingerprint
   (:meth:`SimilarityResponder.register_context`).
2. Each round, A sends ``asker.query(x)`` (~235 kB): its unit sketch, zero-padded to 4096 slots,
   encrypted under A's key.
3. R computes Enc(x ⊙ y) (one plaintext multiply and rescale, no rotation), adds a fresh
   public-key encryption of zero (re-randomises both ciphertext components, which are otherwise a
   deterministic function of A's ciphertext and y) and a one-time mask
   (:func:`~secure_pcft.crypto.ckks_mask.slot_sum_mask`) whose constant coefficient carries the
   flooding noise η ~ N(0, σ²), σ = 1e-4, and whose other 8191 coefficients are uniform mod q.
4. A decrypts the 4096 slots and sums their real parts: ⟨x, y⟩ + η + ε, |ε| ≲ 1e-6.

Why the sum is all A gets: the real part of a CKKS plaintext's slot sum is N·m_0/(2Δ), a function
of its constant coefficient m_0 alone; the mask makes every other coefficient uniform and
independent of x and y. So A's decryption is uniform among the plaintexts with the constant
coefficient (x̃·ỹ)_0 + e_0 + f — one linear measurement of R's encoded sketch ỹ, flooded —
*whatever A encrypted*: complex slot values (TenSEAL encodes reals only, but a malicious A need not
use TenSEAL), out-of-range values, or an arbitrary ciphertext. With the earlier rotate-and-sum
answer the same held only for an honest encoding; a slot-domain mask (the obvious rotation-free
design) would have left the imaginary parts, and any real slot whose value exceeds the mask's
head-room, readable.

Guarantees and limits (stated honestly; SECURITY.md, threat_models/TM-02):

* Semi-honest A learns the score (±σ) and nothing else; R learns nothing (IND-CPA of CKKS,
  128-bit parameters).
* Malicious A: each answer is still one linear measurement of ỹ (its choice of x̃ picks which),
  so answers are capped per asker per round. What it can still do: send a malformed *public key*
  (e.g. pk = (0, 0)); the encryption of zero then no longer hides the second ciphertext
  component d1 = c1(x)·ỹ, from which A, knowing its own c1(x), reads ỹ. Nothing cheap detects a
  malformed RLWE public key; the bound is that ỹ is a JL sketch of R's released (DP) adapter or
  signature, i.e. post-processing of what R's ledger already accounts, and that A is an
  authenticated roster member (docs/design.md, "privacy closure").
* Flooding σ ≈ 100× the measured CKKS error hides the low-order bits of the score; it is NOT the
  2^-λ statistical flooding of formal circuit privacy.

Threats mitigated (threat_models/): similarity discovery leaking adapters or scores to a curious
peer (TM-01) or the relay (TM-04); probing with chosen queries and malformed contexts (TM-02), also
from several colluding identities (TM-05, bounded per asker).
"""

from __future__ import annotations

import logging
import math
import random
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

import numpy as np
import numpy.typing as npt
import tenseal as ts

from secure_pcft.crypto import _params
from secure_pcft.crypto.ckks_mask import slot_sum_mask
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
_ZERO_SLOTS = [0.0] * _params.SLOT_COUNT
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
        """Serialised public context: the parameters and the public key (~0.36 MB); no secret,
        Galois or relinearisation keys.

        Built once and reused: send it once per responder per session.
        """
        if self._public is None:
            self._public = bytes(
                self._ctx.serialize(
                    save_public_key=True,
                    save_secret_key=False,
                    save_galois_keys=False,
                    save_relin_keys=False,
                )
            )
        return self._public

    def query(self, vector: Sequence[float] | npt.ArrayLike) -> bytes:
        """Encrypt a unit vector (length ≤ 4096, zero-padded) → serialised ciphertext (~235 kB)."""
        padded = _as_unit_vector(vector, "asker")
        return bytes(ts.ckks_vector(self._ctx, padded).serialize())

    def decrypt(self, answer: bytes) -> float:
        """Decrypt a responder's answer and sum its slots: the (noisy) inner product.

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
            cts = vec.ciphertext()
            last_level = self._ctx.seal_context().data.last_parms_id()
            if vec.size() != _params.SLOT_COUNT or len(cts) != 1 or cts[0].parms_id() != last_level:
                raise MessageError(
                    f"similarity answer: expected one {_params.SLOT_COUNT}-slot ciphertext at "
                    "the answer level (after the product's rescale)"
                )
            value = math.fsum(vec.decrypt())  # the real part of the slot sum: the score
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
        max_context_bytes: largest accepted public context, bytes (an honest one is ~0.36 MB).
        max_query_bytes: largest accepted query ciphertext, bytes.
        max_loaded_contexts: askers' contexts kept deserialised (SEAL objects, ~5.6 MB each, most
            of it SEAL's precomputed tables); the others are kept as their validated bytes
            (~0.36 MB) and loaded again (~9 ms) when their query comes. 63 loaded contexts per
            peer were 22 GB in a 64-peer simulation.
    """

    max_queries_per_round: int = 1
    max_context_bytes: int = 2 * 1024 * 1024
    max_query_bytes: int = 1024 * 1024
    max_loaded_contexts: int = 8

    def __post_init__(self) -> None:
        for name in (
            "max_queries_per_round",
            "max_context_bytes",
            "max_query_bytes",
            "max_loaded_contexts",
        ):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigError(f"similarity.{name}: must be a positive integer")


def _pinned(ctx: ts.Context) -> ts.Context:
    # The asker controls these flags in the serialised context; pin the ones we rely on.
    ctx.auto_rescale = True
    ctx.auto_mod_switch = True
    ctx.auto_relin = True
    return ctx


class SimilarityResponder:
    """Answers encrypted inner-product queries with its own (plaintext) sketch.

    Askers are keyed by an authenticated id (the envelope sender's fingerprint); their public
    contexts are validated once and cached for the session as bytes, the most recently used
    ``policy.max_loaded_contexts`` of them also deserialised.
    """

    def __init__(self, policy: ResponderPolicy | None = None) -> None:
        self._policy = policy or ResponderPolicy()
        self._contexts: dict[str, bytes] = {}  # validated public contexts
        self._loaded: OrderedDict[str, ts.Context] = OrderedDict()  # LRU of deserialised ones
        self._queries: dict[str, tuple[int, int]] = {}  # asker -> (round, answers given)

    def has_context(self, asker: str) -> bool:
        return asker in self._contexts

    def forget(self, asker: str) -> None:
        """Drop an asker's cached context (end of session)."""
        self._contexts.pop(asker, None)
        self._loaded.pop(asker, None)

    def _context(self, asker: str) -> ts.Context | None:
        ctx = self._loaded.get(asker)
        if ctx is not None:
            self._loaded.move_to_end(asker)
            return ctx
        data = self._contexts.get(asker)
        if data is None:
            return None
        ctx = _pinned(_params.load_context(data))  # validated at registration: same bytes
        self._loaded[asker] = ctx
        while len(self._loaded) > self._policy.max_loaded_contexts:
            self._loaded.popitem(last=False)
        return ctx

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
        if asker in self._contexts:
            logger.info("replacing cached similarity context of %s", asker)
        self._contexts[asker] = bytes(context)
        self._loaded[asker] = _pinned(ctx)
        self._loaded.move_to_end(asker)
        while len(self._loaded) > self._policy.max_loaded_contexts:
            self._loaded.popitem(last=False)

    def answer(
        self, asker: str, round: int, query: bytes, own_vector: Sequence[float] | npt.ArrayLike
    ) -> bytes:
        """Answer ``asker``'s query Enc(x): Enc(x ⊙ own_vector) re-randomised and masked so that
        the real part of its slot sum is ⟨x, own_vector⟩ + η and nothing else is readable.

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
        ctx = self._context(asker)
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
            product = enc_x * padded  # plaintext multiply, rescaled to the one-prime level
            # Fresh public-key encryption of zero: re-randomises both ciphertext components.
            product = product + ts.ckks_vector(ctx, _ZERO_SLOTS)
            # One-time mask: slot sum + η, every other coefficient uniform (ckks_mask).
            flood = _CSPRNG.normalvariate(0.0, _params.FLOOD_SIGMA)
            return bytes((product + slot_sum_mask(ctx, product, flood)).serialize())
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
