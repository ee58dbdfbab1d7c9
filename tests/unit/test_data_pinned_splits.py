"""Pinned splits of the generated settings: the exact documents every peer and the reference set get.

The digests were recorded from the code before the generated settings shared one pool-and-split
helper; a refactoring of the loaders must leave them unchanged (same peers, same texts, same order).
Synthetic corpora are written in each reader's own file format; the real corpora are checked too
when ``../shared/data`` holds them. The synthetic writers are copies, not imports of the other data
tests' helpers, on purpose: a pin's input must not move when another test's fixture does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from secure_pcft.data import embedded
from secure_pcft.data.agnews import agnews_federation
from secure_pcft.data.corpus import Federation
from secure_pcft.data.embedded import embedded_federation
from secure_pcft.data.leipzig import LEIPZIG_FILES, leipzig_federation

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def _digest(fed: Federation) -> str:
    record = {
        "peers": [
            [p.peer_id, list(p.train), list(p.val), list(p.test), sorted(p.domain_mix.items())]
            for p in fed.peers
        ],
        "reference": list(fed.reference),
        "domains": list(fed.domains),
        "description": fed.description,
    }
    blob = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def _fake_leipzig(root: Path, n: int = 300) -> Path:
    folder = root / "leipzig"
    folder.mkdir()
    for genre, files in LEIPZIG_FILES.items():
        for lang, name in files.items():
            lines = [f"{i + 1}\t{lang} {genre} satz {i} ." for i in range(n)]
            (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _fake_agnews(root: Path, per_class: int = 200) -> Path:
    folder = root / "agnews"
    folder.mkdir()
    rows = [
        f'"{c}","Title {c}-{i}","Body of class {c} item {i} costs  #36;{i}"'
        for i in range(per_class)
        for c in range(1, 5)
    ]
    (folder / "test.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


SYNTHETIC_CASES: dict[str, tuple[Callable[[Path], Federation], str]] = {
    "leipzig-specific-sizes": (
        lambda root: leipzig_federation(
            _fake_leipzig(root), docs_per_peer=10, val_docs=3, test_docs=5, reference_docs=6
        ),
        "1fbb67bc467358861505dc763fc6af7068a604a0ff4070b8f151c02580078e7c",
    ),
    "leipzig-mixed-defaults": (
        lambda root: leipzig_federation(
            _fake_leipzig(root), setting="mixed", docs_per_peer=12, seed=3, genre="news"
        ),
        "a949dbcb1afaf4da6202eeefe307eaa19bd998843256dbb3bd60254aeb376092",
    ),
    "agnews-specific-sizes": (
        lambda root: agnews_federation(
            _fake_agnews(root), docs_per_peer=8, val_docs=3, test_docs=4, reference_docs=8
        ),
        "e1df2e2df191f658357386585e4604b583c2f741d5d77e0be969f55708cc937e",
    ),
    "agnews-mixed-defaults": (
        lambda root: agnews_federation(
            _fake_agnews(root), setting="mixed", docs_per_peer=12, num_peers=5, seed=7
        ),
        "634ffc96374682a88da16858aa7d390d65e19510561944e9a2c4856a1e9dcdfd",
    ),
}


@pytest.mark.parametrize("case", sorted(SYNTHETIC_CASES))
def test_synthetic_splits_are_pinned(case: str, tmp_path: Path) -> None:
    build, expected = SYNTHETIC_CASES[case]

    fed = build(tmp_path)

    assert _digest(fed) == expected


def test_embedded_splits_are_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    # The speeches come from an optional wheel; their content is irrelevant to the split itself.
    monkeypatch.setattr(
        embedded,
        "parlspeech_documents",
        lambda lang: [f"{lang} rede {i} ist hier." for i in range(250)],
    )

    fed = embedded_federation(num_peers=4, docs_per_peer=9, seed=2, languages=("de", "nl"))

    assert _digest(fed) == "d34d2d6657e4fd3b7f2905be27c80bd84235cecde98053de113e857ab86bcf20"


REAL_CASES: dict[str, tuple[Callable[[], Federation], str]] = {
    "leipzig-specific": (
        lambda: leipzig_federation(SHARED_DATA, setting="specific", seed=0),
        "642e15b95900b83edd5f64afaf0df093ab885af3eb9cf7eac389877fcad86e12",
    ),
    "leipzig-mixed": (
        lambda: leipzig_federation(SHARED_DATA, setting="mixed", seed=0),
        "538364bd54529b3792364c81b36846b924138bb8b901a9b9a61f6517b26ae18b",
    ),
    "agnews-specific": (
        lambda: agnews_federation(SHARED_DATA, setting="specific", seed=0),
        "bdca546d239fb815442091276bdf67459e39259707178d40084924b9e6a5d81b",
    ),
    "agnews-mixed": (
        lambda: agnews_federation(SHARED_DATA, setting="mixed", seed=1),
        "485743aae84e9ad272a23d7faf8808041bedfcdd79f8f3f3b3ac2a980b35adc1",
    ),
}


@pytest.mark.parametrize("case", sorted(REAL_CASES))
def test_real_corpus_splits_are_pinned(case: str) -> None:
    corpus = case.split("-")[0]
    if not (SHARED_DATA / corpus).is_dir():
        pytest.skip(f"benchmark corpora not at {SHARED_DATA}")
    build, expected = REAL_CASES[case]

    fed = build()

    assert _digest(fed) == expected
