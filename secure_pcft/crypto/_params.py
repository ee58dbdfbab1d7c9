"""The one vetted CKKS parameter set for encrypted similarity. Private: callers never choose these.

* Ring degree N = 8192 → 4096 real slots: one ciphertext holds a whole sketch (dim ≤ 4096).
* Coefficient modulus 60 + 40 + 60 = 160 bits (the last 60-bit prime is SEAL's special
  key-switching prime). The HomomorphicEncryption.org security standard (Albrecht et al., 2018,
  Table 1; SEAL enforces it as ``sec_level_type.tc128``) allows at most 218 bits at N = 8192 for
  **128-bit classical security** with uniform ternary secrets; 160 bits is well inside that bound.
* One multiplicative level is all an inner product needs (ciphertext × plaintext, one rescale;
  the slot sum is rotations and additions). The textbook ``[60, 40, 40, 60]`` chain carries a
  second, unused level that makes every key and ciphertext ~1.5–2× larger (measured in
  ``benchmarks/crypto_primitives.py``), so it is not used.
* Scale 2^40: the CKKS error of a unit-vector inner product (encryption, plaintext multiply,
  rescale, 12 rotations) measured |ε| ≤ 1.6e-6 (40 pairs, two runs); the result keeps
  60 - 40 = 20 bits of head-room above the scale (|score| ≤ 1).
* Galois keys only for the 12 rotations the slot sum uses (left by 1, 2, 4, …, 2048), not
  TenSEAL's default set of 24: the public context shrinks from ~18 MB to ~9 MB.
* Noise flooding: σ = 1e-4 (≈ 2^-13.3) on the score, 60–300× (2^6–2^8) the measured CKKS
  error, so |error| ≤ 1e-3 holds with probability 1 - 2e-23 (10σ). This hides the low-order
  bits of the result from a semi-honest asker; it is NOT the 2^-λ statistical flooding of formal
  circuit privacy (see :mod:`secure_pcft.crypto.he_similarity`).
"""

from __future__ import annotations

import tenseal as ts

POLY_MODULUS_DEGREE = 8192
COEFF_MOD_BIT_SIZES = (60, 40, 60)
SECURITY_LEVEL_BITS = 128
MAX_TOTAL_MODULUS_BITS_128 = 218  # HE standard bound at N = 8192
GLOBAL_SCALE = 2.0**40
SLOT_COUNT = POLY_MODULUS_DEGREE // 2

# Total modulus bits of the key level, the first data level (fresh ciphertexts) and the last one.
MODULUS_CHAIN_BITS = (
    sum(COEFF_MOD_BIT_SIZES),
    sum(COEFF_MOD_BIT_SIZES[:-1]),
    COEFF_MOD_BIT_SIZES[0],
)

# TenSEAL's slot sum over SLOT_COUNT slots rotates left by SLOT_COUNT/2, ..., 2, 1.
ROTATION_STEPS = tuple(1 << i for i in range(SLOT_COUNT.bit_length() - 1))
# SEAL's Galois element for a left rotation by k slots is 3^k mod 2N.
GALOIS_ELEMENTS = tuple(pow(3, step, 2 * POLY_MODULUS_DEGREE) for step in ROTATION_STEPS)

FLOOD_SIGMA = 1e-4  # standard deviation of the Gaussian added to every answer (score units)
SCORE_ERROR_BOUND = 1e-3  # documented |decrypted - plaintext inner product| bound

_THREADS = 1  # peers share small machines; HE work here is per pair and small

assert sum(COEFF_MOD_BIT_SIZES) <= MAX_TOTAL_MODULUS_BITS_128


def new_secret_context() -> ts.Context:
    """A fresh CKKS context with secret and public keys (no Galois or relinearisation keys)."""
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=POLY_MODULUS_DEGREE,
        coeff_mod_bit_sizes=list(COEFF_MOD_BIT_SIZES),
        n_threads=_THREADS,
    )
    ctx.global_scale = GLOBAL_SCALE
    return ctx


def load_context(data: bytes) -> ts.Context:
    """Deserialise a context (trusted or not: callers validate with :func:`context_problems`)."""
    return ts.context_from(data, n_threads=_THREADS)


def context_problems(ctx: ts.Context) -> list[str]:
    """Ways in which a received public context deviates from the vetted set (empty = fine)."""
    problems: list[str] = []
    seal = ctx.seal_context().data
    key_data = seal.key_context_data()
    if key_data.parms().poly_modulus_degree() != POLY_MODULUS_DEGREE:
        problems.append("poly_modulus_degree differs from the vetted set")
    chain = (
        key_data.total_coeff_modulus_bit_count(),
        seal.first_context_data().total_coeff_modulus_bit_count(),
        seal.last_context_data().total_coeff_modulus_bit_count(),
    )
    if chain != MODULUS_CHAIN_BITS or seal.first_context_data().chain_index() != 1:
        problems.append("coefficient modulus chain differs from the vetted set")
    if ctx.global_scale != GLOBAL_SCALE:
        problems.append("global scale differs from the vetted set")
    if ctx.is_private() or ctx.has_secret_key():
        problems.append("context carries a secret key")
    if not ctx.has_public_key():
        problems.append("context has no public key")
    if not ctx.has_galois_keys():
        problems.append("context has no Galois keys")
    else:
        keys = ctx.galois_keys().data
        if not all(keys.has_key(elt) for elt in GALOIS_ELEMENTS):
            problems.append("context lacks Galois keys for the slot-sum rotations")
    return problems
