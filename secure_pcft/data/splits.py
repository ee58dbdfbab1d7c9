"""Deterministic splits: one peer's train/val/test, and domain pools shared out among peers.

Randomness is explicit and local: every shuffle uses its own ``random.Random`` seeded from the run's
seed plus a label (a string seed is hashed with SHA-512 by ``random``, so streams are stable across
processes and Python versions and independent of ``PYTHONHASHSEED``). The global RNG is never used.

Disjointness is by construction: :class:`DocumentPool` shuffles each domain once and hands out
consecutive, non-overlapping slices; documents are de-duplicated first, so no text is held by two
peers, or by a peer and the public reference set.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from secure_pcft.data.corpus import Federation, PeerCorpus
from secure_pcft.errors import DataError

#: Evaluation-set floors of the generated settings (documents per peer). With little training data
#: per peer, val/test sized as fractions of it would be a handful of sentences and give noisy
#: perplexities and trust weights, so they are sized for stable measurement instead (see
#: :func:`eval_sizes`). The test set is the larger: it carries the reported numbers.
MIN_VAL_DOCS = 20
MIN_TEST_DOCS = 40


class Split(NamedTuple):
    """One peer's documents, split. All three parts are disjoint."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]


def _rng(seed: int | str, *labels: str) -> random.Random:
    return random.Random("|".join(["secure-pcft", str(seed), *labels]))


def unique_documents(docs: Iterable[str]) -> list[str]:
    """Drop exact duplicates, keeping the first occurrence (so equal texts cannot cross a split)."""
    return list(dict.fromkeys(docs))


def take(docs: Sequence[str], n: int, *, seed: int | str) -> tuple[str, ...]:
    """A deterministic random sample of ``n`` documents (without replacement) from ``docs``.

    Raises:
        DataError: ``n`` is negative or larger than ``len(docs)``.
    """
    if not 0 <= n <= len(docs):
        raise DataError(f"cannot take {n} documents from {len(docs)}")
    order = list(range(len(docs)))
    _rng(seed, "take").shuffle(order)
    return tuple(docs[i] for i in order[:n])


def split_documents(
    docs: Sequence[str], *, val_fraction: float, test_fraction: float, seed: int | str
) -> Split:
    """Shuffle ``docs`` deterministically and cut them into train / val / test.

    Sizes: ``val = max(1, round(n·val_fraction))``, ``test = max(1, round(n·test_fraction))``,
    train gets the rest. Equal documents are not merged here; call :func:`unique_documents` first
    when duplicates must not straddle splits.

    Raises:
        DataError: fractions out of range, or too few documents for three non-empty splits.
    """
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must lie in (0, 1) "
            "and sum to less than 1"
        )
    n = len(docs)
    n_val = max(1, math.floor(n * val_fraction + 0.5))
    n_test = max(1, math.floor(n * test_fraction + 0.5))
    if n - n_val - n_test < 1:
        raise DataError(f"{n} documents are too few for non-empty train, val and test splits")
    order = list(range(n))
    _rng(seed, "split").shuffle(order)
    shuffled = [docs[i] for i in order]
    return Split(
        train=tuple(shuffled[n_val + n_test :]),
        val=tuple(shuffled[:n_val]),
        test=tuple(shuffled[n_val : n_val + n_test]),
    )


def eval_sizes(
    train_docs: int,
    val_fraction: float,
    test_fraction: float,
    *,
    min_val: int = MIN_VAL_DOCS,
    min_test: int = MIN_TEST_DOCS,
) -> tuple[int, int]:
    """Val and test sizes (documents per peer) for a generated setting with ``train_docs`` per peer.

    The fractions are read as shares of a peer's whole data (train + val + test), so
    ``total = train_docs / (1 - val_fraction - test_fraction)``; each evaluation set gets
    ``max(floor, round(total·fraction))``. With the defaults and 60 training documents this gives
    20 / 40 (floors); with 1000 it gives 143 / 286 (fractions).

    Raises:
        DataError: a non-positive ``train_docs`` or fractions out of range.
    """
    if train_docs < 1:
        raise DataError(f"train_docs must be >= 1, got {train_docs}")
    if not (val_fraction > 0 and test_fraction > 0 and val_fraction + test_fraction < 1):
        raise DataError("val_fraction and test_fraction must be > 0 and sum to less than 1")
    total = train_docs / (1.0 - val_fraction - test_fraction)
    val = max(min_val, math.floor(total * val_fraction + 0.5), 1)
    test = max(min_test, math.floor(total * test_fraction + 0.5), 1)
    return val, test


def apportion(n: int, shares: Mapping[str, float]) -> dict[str, int]:
    """Split the integer ``n`` along ``shares`` (largest remainder; ties go to the earlier key).

    The counts always sum to ``n`` exactly: ``apportion(60, {"de": .75, "fr": .25}) == {"de": 45,
    "fr": 15}``.
    """
    total = sum(shares.values())
    if n < 0 or total <= 0 or min(shares.values(), default=0.0) < 0:
        raise DataError(f"cannot apportion {n} along shares {dict(shares)}")
    quotas = {k: n * v / total for k, v in shares.items()}
    counts = {k: math.floor(q + 1e-9) for k, q in quotas.items()}
    left = n - sum(counts.values())
    by_remainder = sorted(quotas, key=lambda k: -(quotas[k] - counts[k]))  # stable: ties keep order
    for k in by_remainder[:left]:
        counts[k] += 1
    return counts


def cyclic_mixes(
    domains: Sequence[str], num_peers: int, *, major: float = 1.0
) -> list[dict[str, float]]:
    """The paper's peer mixes: peer i holds ``major`` of domain ``i mod k`` and the rest of domain
    ``(i + 1) mod k`` (``major=1.0``: "specific" setting; ``0.75``: "mixed" setting).

    Raises:
        DataError: no domains, ``num_peers < 1`` or ``major`` outside (0, 1].
    """
    if not domains or num_peers < 1 or not 0 < major <= 1:
        raise DataError(
            f"bad mix request: {len(domains)} domains, {num_peers} peers, major={major}"
        )
    k = len(domains)
    mixes: list[dict[str, float]] = []
    for i in range(num_peers):
        mix = {domains[i % k]: major}
        if major < 1.0:
            if k < 2:
                raise DataError("a mixed setting needs at least two domains")
            mix[domains[(i + 1) % k]] = 1.0 - major
        mixes.append(mix)
    return mixes


class DocumentPool:
    """Hands out disjoint slices of each domain's documents, in a seeded random order.

    Documents are de-duplicated within and across domains before shuffling, so two slices never
    hold equal text.
    """

    def __init__(self, domains: Mapping[str, Sequence[str]], *, seed: int | str, name: str) -> None:
        self.name = name
        seen: set[str] = set()
        self._docs: dict[str, list[str]] = {}
        for domain, docs in domains.items():
            unique = [d for d in unique_documents(docs) if d not in seen]
            seen.update(unique)
            _rng(seed, name, domain).shuffle(unique)
            self._docs[domain] = unique
        self._next = dict.fromkeys(self._docs, 0)

    def available(self, domain: str) -> int:
        """Documents of ``domain`` not handed out yet."""
        return len(self._docs[domain]) - self._next[domain]

    def draw(self, domain: str, n: int) -> list[str]:
        """The next ``n`` documents of ``domain``.

        Raises:
            DataError: unknown domain or not enough documents left.
        """
        if domain not in self._docs:
            raise DataError(f"{self.name}: unknown domain {domain!r}")
        if n > self.available(domain):
            raise DataError(
                f"{self.name}: domain {domain!r} has {self.available(domain)} documents left, "
                f"{n} needed"
            )
        start = self._next[domain]
        self._next[domain] = start + n
        return self._docs[domain][start : start + n]


def _interleave(parts: Sequence[list[str]], seed: int, *labels: str) -> tuple[str, ...]:
    # Shuffle the domains together: a consumer that reads only the first batches of the reference
    # set, or of a mixed peer's split, must not see one domain only.
    docs = [doc for part in parts for doc in part]
    _rng(seed, *labels, "order").shuffle(docs)
    return tuple(docs)


def build_federation(
    pools: Mapping[str, Sequence[str]],
    mixes: Sequence[Mapping[str, float]],
    *,
    train_docs: int,
    val_docs: int,
    test_docs: int,
    reference_docs: int,
    seed: int,
    name: str,
    note: str = "",
) -> Federation:
    """Share domain pools out among peers with the given mixes, plus a public reference set.

    Every split of every peer follows the peer's mix (largest-remainder counts); the reference set
    takes an equal share of every domain. Within each split the domains are shuffled together.
    Draw order is fixed: reference, then all peers' test
    sets, then val, then train, so the reference and test sets do not change when only the
    training size changes.

    Raises:
        DataError: a size below 1, a mix naming an unknown domain, or a domain with too few
            documents (the message says which and how many).
    """
    if min(train_docs, val_docs, test_docs, reference_docs) < 1:
        raise DataError(
            f"{name}: train/val/test/reference sizes must be >= 1, got "
            f"{train_docs}/{val_docs}/{test_docs}/{reference_docs}"
        )
    domains = tuple(pools)
    for mix in mixes:
        unknown = set(mix) - set(domains)
        if unknown:
            raise DataError(f"{name}: mix names unknown domain(s) {sorted(unknown)}")
    ref_counts = apportion(reference_docs, dict.fromkeys(domains, 1.0))
    plan = {
        split: [apportion(size, mix) for mix in mixes]
        for split, size in (("test", test_docs), ("val", val_docs), ("train", train_docs))
    }
    pool = DocumentPool(pools, seed=seed, name=name)
    for d in domains:
        need = ref_counts[d] + sum(c.get(d, 0) for counts in plan.values() for c in counts)
        if need > pool.available(d):
            raise DataError(
                f"{name}: domain {d!r} has {pool.available(d)} distinct documents but the setting "
                f"needs {need} (reference + every peer's train/val/test); lower docs_per_peer, "
                "num_peers or reference_docs"
            )
    reference = _interleave([pool.draw(d, ref_counts[d]) for d in domains], seed, name, "reference")
    drawn: dict[str, list[tuple[str, ...]]] = {}
    for split, per_peer in plan.items():
        drawn[split] = [
            _interleave([pool.draw(d, c) for d, c in counts.items()], seed, name, split, str(i))
            for i, counts in enumerate(per_peer)
        ]
    peers = tuple(
        PeerCorpus(
            peer_id=f"peer-{i}",
            train=drawn["train"][i],
            val=drawn["val"][i],
            test=drawn["test"][i],
            domain_mix={d: float(w) for d, w in mix.items() if w > 0},
        )
        for i, mix in enumerate(mixes)
    )
    description = (
        f"{name}: {len(peers)} peers x {train_docs}/{val_docs}/{test_docs} docs (train/val/test), "
        f"public reference {reference_docs} docs over {', '.join(domains)}"
    )
    if note:
        description += f". {note}"
    return Federation(peers=peers, reference=reference, domains=domains, description=description)


def cyclic_federation(
    pools: Mapping[str, Sequence[str]],
    *,
    num_peers: int,
    major: float = 1.0,
    train_docs: int,
    val_docs: int | None,
    test_docs: int | None,
    val_fraction: float,
    test_fraction: float,
    reference_docs: int,
    seed: int,
    name: str,
    note: str = "",
) -> Federation:
    """A generated setting: the paper's :func:`cyclic_mixes` over ``pools``, shared out by
    :func:`build_federation`.

    Peer i holds ``major`` of the i-th domain of ``pools`` (mod the number of domains) and the
    rest of the next one. Evaluation sizes left as ``None`` come from :func:`eval_sizes` with the
    fractions (the fractions are checked even when both sizes are given).

    Args:
        pools: documents per domain; the key order is the cycle order.
        num_peers: peers.
        major: share of each peer's main domain (1.0 = "specific", 0.75 = "mixed").
        train_docs: training documents per peer.
        val_docs, test_docs: evaluation documents per peer, or ``None``.
        val_fraction, test_fraction: shares of a peer's whole data, for :func:`eval_sizes`.
        reference_docs: documents in the public reference set (equal share per domain).
        seed: seed of the deterministic shuffles.
        name: setting name (labels the shuffles and the description).
        note: appended to the description (attribution, licence).

    Raises:
        DataError: as :func:`eval_sizes`, :func:`cyclic_mixes` and :func:`build_federation`.
    """
    default_val, default_test = eval_sizes(train_docs, val_fraction, test_fraction)
    return build_federation(
        pools,
        cyclic_mixes(tuple(pools), num_peers, major=major),
        train_docs=train_docs,
        val_docs=default_val if val_docs is None else val_docs,
        test_docs=default_test if test_docs is None else test_docs,
        reference_docs=reference_docs,
        seed=seed,
        name=name,
        note=note,
    )
