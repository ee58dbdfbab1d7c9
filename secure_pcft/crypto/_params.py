"""The one vetted CKKS parameter set for encrypted similarity. Private: callers never choose these.

* Ring degree N = 8192 → 4096 real slots: one ciphertext holds a whole sketch (dim ≤ 4096).
* Coefficient modulus 60 + 40 + 60 = 160 bits (the last 60-bit prime is SEAL's special
  key-switching prime). The HomomorphicEncryption.org security standard (Albrecht et al., 2018,
  Table 1; SEAL enforces it as ``sec_level_type.tc128``) allows at most 218 bits at N = 8192 for
  **128-bit classical security** with uniform ternary secrets; 160 bits is well inside that bound.
* One multiplicative level is all an inner product needs (ciphertext × plaintext, one rescale).
  The textbook ``[60, 40, 40, 60]`` chain carries a second, unused level that makes every key and
  ciphertext ~1.5–2× larger (measured in ``benchmarks/crypto_primitives.py``), so it is not used.
  After the rescale the answer sits at the one-prime level (the first 60-bit prime), which is
  what the slot-sum mask needs (:mod:`secure_pcft.crypto.ckks_mask`).
* Scale 2^40: the CKKS error of a unit-vector inner product (encryption, plaintext multiply,
  rescale, masked slot sum) is ~1e-6 (tests/unit/test_crypto_he_similarity.py measures it).
* No Galois keys: the answer is summed by the asker after decryption, not by rotations, so the
  public context is the public key alone (~0.36 MB instead of ~9 MB with the 12 slot-sum keys)
  and a context that carries Galois or relinearisation keys is refused.
* Noise flooding: σ = 1e-4 (≈ 2^-13.3) on the score, ~100× the CKKS error, so |error| ≤ 1e-3
  holds with probability 1 - 2e-23 (10σ). This hides the low-order bits of the result from a
  semi-honest asker; it is NOT the 2^-λ statistical flooding of formal circuit privacy (see
  :mod:`secure_pcft.crypto.he_similarity`).
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
    if ctx.has_galois_keys() or ctx.has_relin_keys():
        problems.append("context carries Galois or relinearisation keys (the protocol uses none)")
    return problems
