"""Deterministic splits, apportioning and sharing domain pools out among peers."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from secure_pcft.data.corpus import Federation
from secure_pcft.data.splits import (
    DocumentPool,
    apportion,
    build_federation,
    cyclic_federation,
    cyclic_mixes,
    eval_sizes,
    split_documents,
    take,
    unique_documents,
)
from secure_pcft.errors import DataError

DOCS = [f"document number {i}" for i in range(100)]


def _pools(n: int = 200) -> dict[str, list[str]]:
    return {d: [f"{d} sentence {i}" for i in range(n)] for d in ("de", "fr", "it")}


def _domain(doc: str) -> str:
    return doc.split()[0]


def test_split_is_deterministic_disjoint_and_complete() -> None:
    a = split_documents(DOCS, val_fraction=0.1, test_fraction=0.2, seed=7)
    b = split_documents(DOCS, val_fraction=0.1, test_fraction=0.2, seed=7)
    c = split_documents(DOCS, val_fraction=0.1, test_fraction=0.2, seed=8)

    assert a == b
    assert a != c
    assert (len(a.train), len(a.val), len(a.test)) == (70, 10, 20)
    assert sorted(a.train + a.val + a.test) == sorted(DOCS)


def test_split_does_not_touch_the_global_rng() -> None:
    random.seed(123)
    expected = random.random()
    random.seed(123)

    split_documents(DOCS, val_fraction=0.1, test_fraction=0.2, seed=1)

    assert random.random() == expected


def test_split_gives_every_part_a_document_or_raises() -> None:
    tiny = split_documents(DOCS[:3], val_fraction=0.1, test_fraction=0.1, seed=0)

    assert (len(tiny.train), len(tiny.val), len(tiny.test)) == (1, 1, 1)
    with pytest.raises(DataError, match="too few"):
        split_documents(DOCS[:2], val_fraction=0.1, test_fraction=0.1, seed=0)
    with pytest.raises(DataError, match="sum to less than 1"):
        split_documents(DOCS, val_fraction=0.6, test_fraction=0.5, seed=0)


def test_take_is_deterministic_and_bounded() -> None:
    first = take(DOCS, 10, seed=3)

    assert first == take(DOCS, 10, seed=3)
    assert len(set(first)) == 10
    assert set(first) <= set(DOCS)
    assert first != take(DOCS, 10, seed=4)
    with pytest.raises(DataError):
        take(DOCS, 101, seed=0)


def test_unique_documents_keeps_first_occurrence_order() -> None:
    assert unique_documents(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]


def test_eval_sizes_floor_small_training_sets_and_scale_large_ones() -> None:
    assert eval_sizes(60, 0.1, 0.2) == (20, 40)
    assert eval_sizes(1000, 0.1, 0.2) == (143, 286)
    assert eval_sizes(60, 0.1, 0.2, min_val=1, min_test=1) == (9, 17)


@pytest.mark.parametrize(
    ("n", "shares", "expected"),
    [
        (60, {"de": 0.75, "fr": 0.25}, {"de": 45, "fr": 15}),
        (64, {"a": 1.0, "b": 1.0, "c": 1.0}, {"a": 22, "b": 21, "c": 21}),
        (7, {"a": 0.75, "b": 0.25}, {"a": 5, "b": 2}),
        (0, {"a": 1.0}, {"a": 0}),
    ],
)
def test_apportion_sums_exactly(n: int, shares: dict[str, float], expected: dict[str, int]) -> None:
    assert apportion(n, shares) == expected


def test_cyclic_mixes_match_the_paper_settings() -> None:
    specific = cyclic_mixes(("de", "fr", "it"), 9)
    mixed = cyclic_mixes(("de", "fr", "it"), 9, major=0.75)

    assert [next(iter(m)) for m in specific] == ["de", "fr", "it"] * 3
    assert all(m == {k: 1.0 for k in m} and len(m) == 1 for m in specific)
    assert mixed[2] == {"it": 0.75, "de": 0.25}
    assert mixed[4] == {"fr": 0.75, "it": 0.25}


def test_document_pool_deduplicates_across_domains_and_refuses_overdraw() -> None:
    pool = DocumentPool({"x": ["a", "b", "a"], "y": ["b", "c"]}, seed=0, name="t")

    assert pool.available("x") == 2
    assert pool.available("y") == 1  # "b" already belongs to x
    drawn = pool.draw("x", 2)
    assert sorted(drawn) == ["a", "b"]
    with pytest.raises(DataError, match="0 documents left, 1 needed"):
        pool.draw("x", 1)


def test_build_federation_peers_are_disjoint_and_follow_their_mix() -> None:
    mixes = cyclic_mixes(("de", "fr", "it"), 9, major=0.75)

    fed = build_federation(
        _pools(), mixes, train_docs=8, val_docs=4, test_docs=12, reference_docs=9, seed=1, name="t"
    )

    everything = [d for p in fed.peers for d in (*p.train, *p.val, *p.test)] + list(fed.reference)
    assert len(everything) == len(set(everything))
    assert Counter(_domain(d) for d in fed.reference) == {"de": 3, "fr": 3, "it": 3}
    for peer, mix in zip(fed.peers, mixes, strict=True):
        assert peer.domain_mix == mix
        major, minor = list(mix)
        assert Counter(_domain(d) for d in peer.train) == {major: 6, minor: 2}
        assert Counter(_domain(d) for d in peer.val) == {major: 3, minor: 1}
        assert Counter(_domain(d) for d in peer.test) == {major: 9, minor: 3}


def _specific(train_docs: int, seed: int) -> Federation:
    mixes = cyclic_mixes(("de", "fr", "it"), 3)
    return build_federation(
        _pools(), mixes, train_docs=train_docs, val_docs=4, test_docs=5, reference_docs=6,
        seed=seed, name="t",
    )  # fmt: skip


def test_build_federation_is_deterministic_and_reference_stable_under_train_size() -> None:
    a, b = _specific(10, seed=3), _specific(10, seed=3)
    bigger, other = _specific(30, seed=3), _specific(10, seed=4)

    assert a == b
    assert a.reference == bigger.reference
    assert [p.test for p in a.peers] == [p.test for p in bigger.peers]
    assert a.reference != other.reference


def test_build_federation_shuffles_domains_within_the_reference_set() -> None:
    fed = build_federation(
        _pools(), cyclic_mixes(("de", "fr", "it"), 3), train_docs=4, val_docs=2, test_docs=2,
        reference_docs=60, seed=0, name="t",
    )  # fmt: skip

    first_third = Counter(_domain(d) for d in fed.reference[:20])
    assert len(first_third) == 3


def test_build_federation_names_the_short_domain() -> None:
    with pytest.raises(
        DataError, match="domain 'fr' has 20 distinct documents but the setting needs"
    ):
        build_federation(
            {"de": _pools()["de"], "fr": _pools(20)["fr"]},
            cyclic_mixes(("de", "fr"), 4),
            train_docs=10, val_docs=2, test_docs=2, reference_docs=4, seed=0, name="t",
        )  # fmt: skip


def test_cyclic_federation_is_build_federation_with_cyclic_mixes_and_eval_sizes() -> None:
    expected = build_federation(
        _pools(),
        cyclic_mixes(("de", "fr", "it"), 5, major=0.75),
        train_docs=12, val_docs=20, test_docs=7, reference_docs=6, seed=4, name="t", note="n",
    )  # fmt: skip

    fed = cyclic_federation(
        _pools(), num_peers=5, major=0.75, train_docs=12, val_docs=None, test_docs=7,
        val_fraction=0.1, test_fraction=0.2, reference_docs=6, seed=4, name="t", note="n",
    )  # fmt: skip

    assert fed == expected
    assert eval_sizes(12, 0.1, 0.2)[0] == 20


def test_cyclic_federation_checks_fractions_even_with_explicit_sizes() -> None:
    with pytest.raises(DataError, match="sum to less than 1"):
        cyclic_federation(
            _pools(), num_peers=3, train_docs=5, val_docs=2, test_docs=2, val_fraction=0.6,
            test_fraction=0.5, reference_docs=3, seed=0, name="t",
        )  # fmt: skip
