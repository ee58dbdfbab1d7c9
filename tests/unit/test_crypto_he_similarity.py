"""CKKS encrypted similarity: accuracy against plaintext cosine, what an answer lets the asker
read, what crosses the wire, limits.

Real TenSEAL throughout. One asker context is shared by the module (key generation is the slow
part); each answer costs ~10 ms. The attacks on the answer (honest, out-of-range and complex
queries) each run against a responder whose mask is switched off as a control, so a broken mask
fails them.
"""

from __future__ import annotations

import os
import struct
import tempfile

import numpy as np
import pytest
import tenseal as ts
import zstandard

from secure_pcft.crypto import _params, he_similarity
from secure_pcft.crypto._protobuf import proto_encode, proto_fields
from secure_pcft.crypto.ckks_mask import ciphertext_bytes
from secure_pcft.crypto.he_similarity import (
    ResponderPolicy,
    SimilarityAsker,
    SimilarityResponder,
)
from secure_pcft.errors import (
    ConfigError,
    CryptoError,
    MessageError,
    OversizeMessageError,
    QueryLimitError,
)


def unit(rng: np.random.Generator, d: int) -> np.ndarray:
    v = rng.standard_normal(d)
    return v / np.linalg.norm(v)


def correlated(rng: np.random.Generator, x: np.ndarray, cos: float) -> np.ndarray:
    z = rng.standard_normal(x.size)
    z -= (z @ x) * x
    z /= np.linalg.norm(z)
    return cos * x + np.sqrt(1 - cos**2) * z


def slots(ctx: ts.Context, answer: bytes) -> np.ndarray:
    """What the asker reads slot by slot: the real parts of every decrypted slot."""
    return np.array(ts.ckks_vector_from(ctx, answer).decrypt())


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


@pytest.fixture
def unmasked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: a responder whose mask is a fresh encryption of zero (no masking at all)."""

    def no_mask(ctx: ts.Context, like: ts.CKKSVector, shift: float) -> ts.CKKSVector:
        return ts.ckks_vector(ctx, [0.0] * _params.SLOT_COUNT) * ([1.0] * _params.SLOT_COUNT)

    monkeypatch.setattr(he_similarity, "slot_sum_mask", no_mask)


@pytest.fixture
def slot_domain_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: the obvious rotation-free mask, a large real slot vector summing to zero (what
    TenSEAL's real encoder can add). It hides real slots and leaves imaginary parts in clear."""

    def real_mask(ctx: ts.Context, like: ts.CKKSVector, shift: float) -> ts.CKKSVector:
        m = np.random.default_rng().uniform(-1e4, 1e4, _params.SLOT_COUNT)
        m -= m.mean()
        zero = ts.ckks_vector(ctx, [0.0] * _params.SLOT_COUNT) * ([1.0] * _params.SLOT_COUNT)
        return zero + list(m)

    monkeypatch.setattr(he_similarity, "slot_sum_mask", real_mask)


# ---- test-only hazmat: a malicious asker that works on SEAL's ciphertext bytes directly
_SEAL_HEADER = struct.Struct("<HBBBBHQ")
_N = _params.POLY_MODULUS_DEGREE


def _minimal_primitive_root(p: int, order: int) -> int:
    """SEAL's NTT root: the smallest primitive ``order``-th root of unity mod ``p``."""
    for g in range(2, 1000):
        root = pow(g, (p - 1) // order, p)
        if pow(root, order // 2, p) == p - 1:
            break
    best, cur, step = root, root, root * root % p
    for _ in range(order // 2):  # every primitive root is an odd power of this one
        best, cur = min(best, cur), cur * step % p
    return best


def _times_i(vector: bytes, primes: list[int], sign: int) -> bytes:
    """Multiply a serialised CKKS vector by sign·X^{N/2}, i.e. every slot by sign·i.

    X^{N/2} evaluated at the primitive 2N-th root ψ^e is w^e with w = ψ^{N/2} (w² = −1): w where
    e ≡ 1 (mod 4) and −w where e ≡ 3 — SEAL's bit-reversed NTT order puts those in the first and
    second half. (The controls below fail if that reading of SEAL is wrong.)
    """
    fields = proto_fields(vector)
    (raw,) = [v for n, _, v in fields if n == 2]
    _, _, major, minor, compression, _, _ = _SEAL_HEADER.unpack(raw[:16])
    body = raw[16:]
    if compression == 2:
        body = zstandard.ZstdDecompressor().decompress(body, max_output_size=1 << 26)
    parms = list(struct.unpack("<4Q", body[:32]))
    size, degree, count = struct.unpack("<3Q", body[33:57])
    (scale,) = struct.unpack("<d", body[57:65])
    data = np.frombuffer(body[73 + 24 :], dtype="<u8")[: size * count * degree]
    data = data.reshape(size, count, degree).copy()
    for level, p in enumerate(primes[:count]):
        w = pow(_minimal_primitive_root(p, 2 * _N), _N // 2, p)
        w = w if sign > 0 else p - w
        evaluations = np.array([w] * (_N // 2) + [p - w] * (_N // 2), dtype=object)
        for c in range(size):
            data[c, level] = np.array(data[c, level].astype(object) * evaluations % p, np.uint64)
    blob = ciphertext_bytes((major, minor), parms, scale, data)
    return proto_encode([(n, wire, blob if n == 2 else v) for n, wire, v in fields])


def _complex_query_read(asker: SimilarityAsker, responder: SimilarityResponder) -> tuple:
    """Query Enc(i·b) (purely imaginary slots), then read the imaginary parts of the answer by
    multiplying it by −i before decrypting: without a mask that is b ⊙ y."""
    seal = asker._ctx.seal_context().data
    q0 = seal.last_context_data().total_coeff_modulus()
    low = seal.first_context_data().total_coeff_modulus()  # low 64 bits of q0·q1
    q1 = low * pow(q0, -1, 2**64) % 2**64
    rng = np.random.default_rng(8)
    b, y = unit(rng, 4096), unit(rng, 4096)
    real_b = bytes(ts.ckks_vector(asker._ctx, list(b)).serialize())
    query = _times_i(real_b, [q0, q1], +1)
    assert float(np.abs(slots(asker._ctx, query)).max()) < 1e-6  # real parts 0: slots are i·b
    answer = responder.answer("asker-fp", 0, query, y)
    return b, y, slots(asker._ctx, _times_i(answer, [q0], -1))


@pytest.fixture(scope="module")
def asker() -> SimilarityAsker:
    return SimilarityAsker()


@pytest.fixture(scope="module")
def public_context(asker: SimilarityAsker) -> bytes:
    return asker.public_context()


@pytest.fixture
def responder(public_context: bytes) -> SimilarityResponder:
    r = SimilarityResponder(ResponderPolicy(max_queries_per_round=100))
    r.register_context("asker-fp", public_context)
    return r


# ---------------------------------------------------------------------- accuracy
@pytest.mark.parametrize("dim", [1024, 4096])
def test_score_matches_plaintext_cosine(
    asker: SimilarityAsker, responder: SimilarityResponder, dim: int
) -> None:
    rng = np.random.default_rng(dim)
    errors = []
    for cos in (-0.7, 0.0, 0.5, 0.95):
        x = unit(rng, dim)
        y = correlated(rng, x, cos)
        score = asker.decrypt(responder.answer("asker-fp", 0, asker.query(x), y))
        errors.append(abs(score - float(x @ y)))

    assert max(errors) <= _params.SCORE_ERROR_BOUND


def test_answers_are_flooded_with_fresh_noise(
    asker: SimilarityAsker, responder: SimilarityResponder
) -> None:
    rng = np.random.default_rng(5)
    x, y = unit(rng, 256), unit(rng, 256)
    query = asker.query(x)

    answers = [responder.answer("asker-fp", 0, query, y) for _ in range(12)]
    scores = np.array([asker.decrypt(a) for a in answers])

    assert len(set(answers)) == len(answers)  # re-randomised ciphertexts
    # σ = 1e-4 flood dominates the ~2e-6 CKKS error; sample std of 12 draws lies in [0.5σ, 1.6σ]
    # with probability > 0.99.
    assert 0.5e-4 < float(scores.std(ddof=1)) < 1.6e-4
    assert float(np.abs(scores - x @ y).max()) <= _params.SCORE_ERROR_BOUND


def _honest_slots(asker: SimilarityAsker, responder: SimilarityResponder) -> tuple:
    rng = np.random.default_rng(6)
    x, y = unit(rng, 4096), unit(rng, 4096)
    return x, y, slots(asker._ctx, responder.answer("asker-fp", 0, asker.query(x), y))


def test_an_honest_answer_shows_its_sum_and_no_slot(
    asker: SimilarityAsker, responder: SimilarityResponder
) -> None:
    x, y, read = _honest_slots(asker, responder)

    assert abs(float(np.sum(read)) - float(x @ y)) <= _params.SCORE_ERROR_BOUND
    assert abs(corr(read, x * y)) < 0.1  # each slot is noise (|r| ~ 1/64 by chance)
    assert float(read.std()) > 1e4  # ... and far larger than any product x_i·y_i (≤ 1)


def test_control_an_unmasked_answer_shows_every_product(
    asker: SimilarityAsker, responder: SimilarityResponder, unmasked: None
) -> None:
    x, y, read = _honest_slots(asker, responder)

    assert corr(read, x * y) > 0.999  # slot i = x_i·y_i: y in clear to the holder of x


def _out_of_range_slots(asker: SimilarityAsker, responder: SimilarityResponder) -> tuple:
    """A malicious asker skips the unit check: every slot of its query holds 1000."""
    y = unit(np.random.default_rng(7), 4096)
    query = bytes(ts.ckks_vector(asker._ctx, [1000.0] * _params.SLOT_COUNT).serialize())
    return y, slots(asker._ctx, responder.answer("asker-fp", 0, query, y))


def test_an_out_of_range_query_learns_one_linear_measurement_only(
    asker: SimilarityAsker, responder: SimilarityResponder
) -> None:
    y, read = _out_of_range_slots(asker, responder)

    assert float(np.sum(read)) == pytest.approx(1000 * float(y.sum()), abs=0.05)  # the sum
    assert abs(corr(read, y)) < 0.1  # and nothing per slot


def test_control_an_out_of_range_query_reads_an_unmasked_answer(
    asker: SimilarityAsker, responder: SimilarityResponder, unmasked: None
) -> None:
    y, read = _out_of_range_slots(asker, responder)

    assert corr(read, y) > 0.999


def test_a_complex_query_reads_nothing_from_the_imaginary_parts(
    asker: SimilarityAsker, responder: SimilarityResponder
) -> None:
    b, y, imaginary = _complex_query_read(asker, responder)

    assert abs(corr(imaginary, b * y)) < 0.1


def test_control_a_complex_query_reads_an_unmasked_answer(
    asker: SimilarityAsker, responder: SimilarityResponder, unmasked: None
) -> None:
    b, y, imaginary = _complex_query_read(asker, responder)

    assert corr(imaginary, b * y) > 0.999


def test_control_a_slot_domain_mask_leaves_the_imaginary_parts_readable(
    asker: SimilarityAsker, responder: SimilarityResponder, slot_domain_mask: None
) -> None:
    """Why the mask is built in the coefficient domain: a real slot mask hides an honest query's
    products but not what a complex query puts in the imaginary parts."""
    x, y, read = _honest_slots(asker, responder)
    assert abs(corr(read, x * y)) < 0.1

    b, y, imaginary = _complex_query_read(asker, responder)

    assert corr(imaginary, b * y) > 0.999


# ---------------------------------------------------------------------- what crosses the wire
def test_public_context_carries_no_secret_key(
    asker: SimilarityAsker, public_context: bytes
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "sk")
        asker._ctx.secret_key().data.save(path)
        with open(path, "rb") as fh:
            sk_bytes = fh.read()
    window = sk_bytes[len(sk_bytes) // 2 : len(sk_bytes) // 2 + 64]
    private = asker._ctx.serialize(save_secret_key=True, save_galois_keys=False)

    received = ts.context_from(public_context)

    assert window in private  # control: a context with the key would contain these bytes
    assert window not in public_context
    assert not received.is_private() and not received.has_secret_key()
    assert received.has_public_key()


def test_public_context_is_the_public_key_alone(public_context: bytes) -> None:
    received = ts.context_from(public_context)

    assert not received.has_galois_keys() and not received.has_relin_keys()
    assert len(public_context) < 400_000  # 9.1 MB with the 12 slot-sum rotation keys


def test_query_does_not_contain_the_plaintext_vector(asker: SimilarityAsker) -> None:
    x = unit(np.random.default_rng(8), 4096)

    query = asker.query(x)

    for encoding in (x.astype(np.float64), x.astype(np.float32)):
        assert encoding[:4].tobytes() not in query
        assert encoding[2000:2004].tobytes() not in query
    assert len(query) < 300_000


# ---------------------------------------------------------------------- limits and rejections
def test_queries_are_bounded_per_asker_per_round(
    asker: SimilarityAsker, public_context: bytes
) -> None:
    rng = np.random.default_rng(9)
    x, y = unit(rng, 64), unit(rng, 64)
    responder = SimilarityResponder()  # default: 1 answer per asker per round
    responder.register_context("a", public_context)
    responder.register_context("b", public_context)
    query = asker.query(x)

    responder.answer("a", 3, query, y)
    with pytest.raises(QueryLimitError, match="per round"):
        responder.answer("a", 3, query, y)
    responder.answer("b", 3, query, y)  # other askers have their own budget
    responder.answer("a", 4, query, y)  # next round: a fresh budget
    with pytest.raises(QueryLimitError, match="older"):
        responder.answer("a", 3, query, y)


def test_malformed_query_still_uses_the_budget(public_context: bytes) -> None:
    responder = SimilarityResponder()
    responder.register_context("a", public_context)
    y = unit(np.random.default_rng(10), 64)

    with pytest.raises(MessageError):
        responder.answer("a", 0, b"junk", y)
    with pytest.raises(QueryLimitError):
        responder.answer("a", 0, b"junk", y)


def test_query_without_registered_context_is_refused(asker: SimilarityAsker) -> None:
    x = unit(np.random.default_rng(11), 64)

    with pytest.raises(MessageError, match="no public context"):
        SimilarityResponder().answer("stranger", 0, asker.query(x), x)


@pytest.mark.parametrize("cut", [0, 100, 100_000, -1])
def test_garbage_or_truncated_queries_are_message_errors(
    asker: SimilarityAsker, responder: SimilarityResponder, cut: int
) -> None:
    rng = np.random.default_rng(12)
    query = asker.query(unit(rng, 64))

    with pytest.raises(MessageError):
        responder.answer("asker-fp", 0, query[:cut], unit(rng, 64))


def test_query_with_wrong_size_or_scale_is_refused(
    asker: SimilarityAsker, responder: SimilarityResponder
) -> None:
    y = unit(np.random.default_rng(13), 64)
    short = ts.ckks_vector(asker._ctx, list(y)).serialize()
    other_scale = ts.ckks_vector(asker._ctx, [0.0] * _params.SLOT_COUNT, 2.0**30).serialize()

    for query in (short, other_scale):
        with pytest.raises(MessageError, match="fresh 4096-slot"):
            responder.answer("asker-fp", 0, query, y)


def test_oversize_query_and_context_are_refused(
    asker: SimilarityAsker, public_context: bytes
) -> None:
    responder = SimilarityResponder(ResponderPolicy(max_query_bytes=1000, max_context_bytes=1000))
    y = unit(np.random.default_rng(14), 64)

    with pytest.raises(OversizeMessageError):
        responder.register_context("a", public_context)
    responder._contexts["a"] = public_context  # bypass to reach the query check
    with pytest.raises(OversizeMessageError):
        responder.answer("a", 0, asker.query(y), y)


def test_context_with_secret_key_is_refused(asker: SimilarityAsker, public_context: bytes) -> None:
    fields = proto_fields(public_context)
    private = proto_fields(asker._ctx.serialize(save_secret_key=True, save_galois_keys=False))
    with_secret = proto_encode([*fields, *[f for f in private if f[0] == 3]])

    with pytest.raises(MessageError, match="secret key"):
        SimilarityResponder().register_context("a", with_secret)


def test_context_with_other_parameters_is_refused() -> None:
    weak = ts.context(ts.SCHEME_TYPE.CKKS, 4096, coeff_mod_bit_sizes=[40, 20, 40])
    weak.global_scale = 2**20
    blob = weak.serialize(save_secret_key=False)

    with pytest.raises(MessageError, match="vetted"):
        SimilarityResponder().register_context("a", blob)


def test_context_with_galois_keys_is_refused(asker: SimilarityAsker) -> None:
    with_keys = asker._ctx.copy()
    with_keys.generate_galois_keys()
    blob = with_keys.serialize(save_secret_key=False, save_galois_keys=True)

    with pytest.raises(MessageError, match="Galois"):
        SimilarityResponder(ResponderPolicy(max_context_bytes=64 * 1024 * 1024)).register_context(
            "a", blob
        )


@pytest.mark.parametrize("cut", [0, 10, 1000, 300_000])
def test_garbage_or_truncated_contexts_are_message_errors(public_context: bytes, cut: int) -> None:
    with pytest.raises(MessageError):
        SimilarityResponder().register_context("a", public_context[:cut])


def test_non_unit_vectors_are_refused(
    asker: SimilarityAsker, responder: SimilarityResponder
) -> None:
    x = unit(np.random.default_rng(15), 64)

    with pytest.raises(CryptoError, match="normalised"):
        asker.query(2 * x)
    with pytest.raises(CryptoError, match="NaN"):
        asker.query(np.full(4, np.nan))
    with pytest.raises(CryptoError):
        asker.query(np.ones(4097) / np.sqrt(4097))
    with pytest.raises(CryptoError, match="normalised"):
        responder.answer("asker-fp", 0, asker.query(x), 0.5 * x)


def test_asker_rejects_garbage_answers(asker: SimilarityAsker) -> None:
    with pytest.raises(MessageError):
        asker.decrypt(b"not an answer")
    with pytest.raises(MessageError, match="answer level"):  # a fresh query is no answer
        asker.decrypt(asker.query(unit(np.random.default_rng(16), 8)))
    with pytest.raises(OversizeMessageError):
        asker.decrypt(b"\0" * (2 * 1024 * 1024))


def test_asker_cannot_be_pickled(asker: SimilarityAsker) -> None:
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(asker)


def test_policy_validation() -> None:
    with pytest.raises(ConfigError):
        ResponderPolicy(max_queries_per_round=0)


def test_only_a_bounded_number_of_contexts_stay_deserialised_and_evicted_ones_still_answer() -> (
    None
):
    """A 64-peer simulation held 63 deserialised contexts per peer (~5.6 MB each: 22 GB, killed)."""
    askers = [SimilarityAsker() for _ in range(4)]
    responder = SimilarityResponder(ResponderPolicy(max_loaded_contexts=2))
    for i, a in enumerate(askers):
        responder.register_context(f"asker-{i}", a.public_context())
    assert len(responder._loaded) == 2 and len(responder._contexts) == 4
    rng = np.random.default_rng(21)
    for i, a in enumerate(askers):  # asker-0 and asker-1 were evicted: loaded again from bytes
        x = unit(rng, 256)
        y = correlated(rng, x, 0.6)
        score = a.decrypt(responder.answer(f"asker-{i}", 0, a.query(x), y))
        assert abs(score - float(x @ y)) <= _params.SCORE_ERROR_BOUND
        assert len(responder._loaded) <= 2
    responder.forget("asker-3")
    assert not responder.has_context("asker-3") and "asker-3" not in responder._loaded
    with pytest.raises(ConfigError, match="max_loaded_contexts"):
        ResponderPolicy(max_loaded_contexts=0)
