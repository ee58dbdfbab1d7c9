"""CKKS encrypted similarity: accuracy against plaintext cosine, what crosses the wire, limits.

Real TenSEAL throughout. One asker context is shared by the module (key generation is the slow
part); each answer costs ~20 ms.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import tenseal as ts

from secure_pcft.crypto import _params, he_similarity
from secure_pcft.crypto.he_similarity import (
    ResponderPolicy,
    SimilarityAsker,
    SimilarityResponder,
    _proto_encode,
    _proto_fields,
    _varint,
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


def all_slots(ctx: ts.Context, answer: bytes) -> list[float]:
    """Decrypt every slot of an answer by rewriting the vector's `sizes` field (test-only)."""
    fields = [f for f in _proto_fields(answer) if f[0] != 1]
    sizes = (1, 2, _varint(_params.SLOT_COUNT))  # packed repeated uint32 sizes = [4096]
    return [float(v) for v in ts.ckks_vector_from(ctx, _proto_encode([sizes, *fields])).decrypt()]


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


def test_every_slot_holds_the_full_score_not_partial_sums(
    asker: SimilarityAsker, responder: SimilarityResponder
) -> None:
    rng = np.random.default_rng(6)
    x, y = unit(rng, 1024), unit(rng, 1024)
    answer = responder.answer("asker-fp", 0, asker.query(x), y)

    slots = np.array(all_slots(asker._ctx, answer))

    assert slots.shape == (_params.SLOT_COUNT,)
    assert float(np.abs(slots - x @ y).max()) <= _params.SCORE_ERROR_BOUND


def test_control_naive_short_dot_leaks_suffix_sums(asker: SimilarityAsker) -> None:
    """Positive control for the slot check above: TenSEAL's dot over 1024 of 4096 slots leaves
    Σ_{i≥j} x_i y_i in slot j, i.e. the responder's coordinates. Padding to 4096 prevents it."""
    ctx = ts.context_from(asker.public_context())
    rng = np.random.default_rng(7)
    x, y = unit(rng, 1024), unit(rng, 1024)
    naive = ts.ckks_vector_from(ctx, ts.ckks_vector(asker._ctx, list(x)).serialize()).dot(list(y))

    slots = all_slots(asker._ctx, naive.serialize())

    products = -np.diff(np.array(slots[:1025]))  # slot j - slot j+1 = x_j · y_j
    recovered_y = products / x  # the asker knows x
    assert slots[1] == pytest.approx(float(x[1:] @ y[1:]), abs=1e-4)
    assert float(np.corrcoef(recovered_y, y)[0, 1]) > 0.99


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
    assert received.has_public_key() and received.has_galois_keys()


def test_public_context_has_only_the_slot_sum_rotation_keys(public_context: bytes) -> None:
    keys = ts.context_from(public_context).galois_keys().data

    assert keys.size() == len(_params.GALOIS_ELEMENTS) == 12
    assert len(public_context) < 10 * 1024 * 1024


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
    responder._contexts["a"] = ts.context_from(public_context)  # bypass to reach the query check
    with pytest.raises(OversizeMessageError):
        responder.answer("a", 0, asker.query(y), y)


def test_context_with_secret_key_is_refused(asker: SimilarityAsker, public_context: bytes) -> None:
    fields = _proto_fields(public_context)
    private = _proto_fields(asker._ctx.serialize(save_secret_key=True, save_galois_keys=False))
    with_secret = _proto_encode([*fields, *[f for f in private if f[0] == 3]])

    with pytest.raises(MessageError, match="secret key"):
        SimilarityResponder().register_context("a", with_secret)


def test_context_with_other_parameters_is_refused() -> None:
    weak = ts.context(ts.SCHEME_TYPE.CKKS, 4096, coeff_mod_bit_sizes=[40, 20, 40])
    weak.global_scale = 2**20
    weak.generate_galois_keys()
    blob = weak.serialize(save_secret_key=False)

    with pytest.raises(MessageError, match="vetted"):
        SimilarityResponder().register_context("a", blob)


def test_context_without_galois_keys_is_refused(asker: SimilarityAsker) -> None:
    blob = asker._ctx.serialize(save_secret_key=False, save_galois_keys=False)

    with pytest.raises(MessageError, match="Galois"):
        SimilarityResponder().register_context("a", blob)


@pytest.mark.parametrize("cut", [0, 10, 1000, 5_000_000])
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
    with pytest.raises(MessageError, match="scalar"):
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


def test_fallback_to_full_galois_keys_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_: object) -> bytes:
        raise CryptoError("simulated TenSEAL layout change")

    monkeypatch.setattr(he_similarity, "_public_context_with_rotation_keys", broken)
    asker = SimilarityAsker()
    responder = SimilarityResponder()
    rng = np.random.default_rng(17)
    x, y = unit(rng, 32), unit(rng, 32)

    responder.register_context("a", asker.public_context())
    score = asker.decrypt(responder.answer("a", 0, asker.query(x), y))

    assert abs(score - float(x @ y)) <= _params.SCORE_ERROR_BOUND
