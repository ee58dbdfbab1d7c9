"""Hazmat: a one-time mask that keeps a CKKS ciphertext's slot sum and hides everything else.

Used by the rotation-free similarity answer (:mod:`secure_pcft.crypto.he_similarity`): the
responder returns Enc(x ⊙ y) plus this mask; the asker decrypts and sums the slots.

**The fact it rests on.** A CKKS plaintext is a polynomial m ∈ Z_q[X]/(X^N + 1) (N = 8192) at
scale Δ; its 4096 slots are m evaluated at half of the primitive 2N-th roots of unity, the other
half being their complex conjugates. For 0 ≤ i < N the sum of ζ^i over all N primitive 2N-th
roots ζ is N when i = 0 and 0 otherwise, so

    Re Σ_slots m = N · m_0 / (2Δ)                  (m_0: the constant coefficient)

— the real part of the slot sum is the constant coefficient, and only it. A mask whose constant
coefficient is f and whose other N − 1 coefficients are independent and uniform mod q therefore
moves the slot sum by N·f/(2Δ) and leaves nothing else of the plaintext: whatever the asker put
in its query (real, complex or out-of-range values, or no valid encoding at all), the masked
plaintext is uniform among the polynomials with the same constant coefficient.

**How it is built.** SEAL keeps ciphertexts in NTT form: each component is stored as its values
at all N primitive 2N-th roots (in a permuted order), so the N stored values sum to N·m_0 mod q.
N values drawn uniform mod q conditioned on Σ ≡ N·f (mod q) are, through the inverse NTT (a
bijection of Z_q^N), exactly a polynomial with m_0 = f and the other coefficients uniform. The
mask travels as a ciphertext (d0 = those values, d1 = 0): decryption computes d0 + d1·s, so
adding it adds the mask to the plaintext. It is written as SEAL's own uncompressed ciphertext
bytes and parsed back by TenSEAL's loader (which checks every value against the modulus).

Only a ciphertext at a one-prime level (the similarity answer after its rescale) can be masked:
that is the only level whose modulus q the TenSEAL binding exposes (``total_coeff_modulus``).
"""

from __future__ import annotations

import os
import struct

import numpy as np
import numpy.typing as npt
import tenseal as ts

from secure_pcft.crypto._protobuf import proto_encode, proto_fields
from secure_pcft.errors import CryptoError

_SEAL_MAGIC = 0xA15E
_SEAL_HEADER = struct.Struct("<HBBBBHQ")  # magic, header size, major, minor, compression, 0, size
_NO_COMPRESSION = 0
_CIPHERTEXT_FIELD = 2  # CKKSVectorProto: the repeated SEAL ciphertext field


def uniform_below(q: int, n: int) -> npt.NDArray[np.uint64]:
    """``n`` independent values uniform in [0, q) from the OS CSPRNG (rejection sampling).

    Raises:
        CryptoError: ``q`` is not in [2, 2^64).
    """
    if not 2 <= q < 2**64:
        raise CryptoError(f"modulus {q} out of range")
    bits = q.bit_length()
    mask = np.uint64((1 << bits) - 1) if bits < 64 else np.uint64(2**64 - 1)
    out = np.empty(0, dtype=np.uint64)
    while out.size < n:
        draw = np.frombuffer(os.urandom(8 * (n - out.size + 64)), dtype=np.uint64) & mask
        out = np.concatenate([out, draw[draw < np.uint64(q)]])
    return out[:n]


def sum_preserving_values(q: int, n: int, constant: int) -> npt.NDArray[np.uint64]:
    """``n`` values uniform mod ``q`` given that they sum to ``n · constant`` (mod ``q``): the NTT
    form of a polynomial with constant coefficient ``constant`` and uniform other coefficients."""
    values = uniform_below(q, n)
    head = sum(int(v) for v in values[:-1].tolist())
    values[-1] = np.uint64((n * constant - head) % q)
    return values


def _seal_header(version: tuple[int, int], size: int) -> bytes:
    return _SEAL_HEADER.pack(_SEAL_MAGIC, _SEAL_HEADER.size, *version, _NO_COMPRESSION, 0, size)


def ciphertext_bytes(
    version: tuple[int, int],
    parms_id: list[int],
    scale: float,
    components: npt.NDArray[np.uint64],
) -> bytes:
    """SEAL's uncompressed serialisation of an NTT-form ciphertext.

    ``components`` has shape (size, primes, N): each component's values per RNS prime. Layout
    (SEAL 4, ``Ciphertext::save_members``): parms_id (4 × u64), is_ntt_form (u8), size,
    poly_modulus_degree, coeff_modulus_size (u64 each), scale (f64), correction_factor (u64),
    then the data as a nested serialised DynArray (header, u64 count, u64 values).
    """
    size, primes, degree = components.shape
    data = np.ascontiguousarray(components, dtype="<u8").reshape(-1)
    array = struct.pack("<Q", data.size) + data.tobytes()
    members = (
        struct.pack("<4Q", *parms_id)
        + struct.pack("<B", 1)
        + struct.pack("<3Q", size, degree, primes)
        + struct.pack("<d", scale)
        + struct.pack("<Q", 1)
        + _seal_header(version, _SEAL_HEADER.size + len(array))
        + array
    )
    return _seal_header(version, _SEAL_HEADER.size + len(members)) + members


def slot_sum_mask(context: ts.Context, like: ts.CKKSVector, shift: float) -> ts.CKKSVector:
    """A fresh mask for ``like``: adding it moves the real part of the slot sum by ``shift``
    (± rounding of ``shift`` to 2Δ/N ≈ 2.7e-8 at Δ ≈ 2^40) and makes every other coefficient of
    the plaintext uniform mod q.

    Args:
        context: the (asker's public) context ``like`` lives in.
        like: a one-ciphertext vector at a one-prime level (for example after one rescale).
        shift: the amount to add to the slot sum (the flooding noise), in value units.

    Raises:
        CryptoError: ``like`` is not a single two-component NTT ciphertext at a one-prime level,
            or TenSEAL refuses the mask (its serialised layout differs from the one above).
    """
    cts = like.ciphertext()
    if len(cts) != 1:
        raise CryptoError("mask: expected a vector of one ciphertext")
    ct = cts[0]
    if ct.size() != 2 or ct.coeff_modulus_size() != 1 or not ct.is_ntt_form():
        raise CryptoError("mask: expected a two-component NTT ciphertext at a one-prime level")
    degree = int(ct.poly_modulus_degree())
    q = int(context.seal_context().data.get_context_data(ct.parms_id()).total_coeff_modulus())
    constant = round(shift * 2.0 * ct.scale / degree) % q
    fields = proto_fields(bytes(like.serialize()))
    ciphertexts = [value for number, _, value in fields if number == _CIPHERTEXT_FIELD]
    if len(ciphertexts) != 1 or len(ciphertexts[0]) < _SEAL_HEADER.size:
        raise CryptoError("mask: unexpected TenSEAL vector layout")
    magic, _, major, minor, *_ = _SEAL_HEADER.unpack(ciphertexts[0][: _SEAL_HEADER.size])
    if magic != _SEAL_MAGIC:
        raise CryptoError("mask: unexpected SEAL header")
    d0 = sum_preserving_values(q, degree, constant)
    components = np.stack([d0, np.zeros(degree, dtype=np.uint64)]).reshape(2, 1, degree)
    blob = ciphertext_bytes((major, minor), list(ct.parms_id()), float(ct.scale), components)
    spliced = [
        (number, wire, blob if number == _CIPHERTEXT_FIELD else value)
        for number, wire, value in fields
    ]
    try:
        return ts.ckks_vector_from(context, proto_encode(spliced))
    except Exception as exc:  # TenSEAL/SEAL raise assorted types
        raise CryptoError(f"mask: TenSEAL refused the mask ciphertext ({exc})") from None
