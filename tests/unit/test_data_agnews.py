"""AG News topic setting: cleaning, disjoint peers, the paper's class mixes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from secure_pcft.data.agnews import (
    AGNEWS_CLASSES,
    agnews_federation,
    clean_agnews_text,
    read_agnews,
)
from secure_pcft.errors import DataError

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not (SHARED_DATA / "agnews").is_dir(), reason=f"benchmark corpora not at {SHARED_DATA}"
)


def _fake_agnews(root: Path, per_class: int = 120) -> Path:
    folder = root / "agnews"
    folder.mkdir()
    rows = [
        f'"{c}","Title {c}-{i}","Body of class {c} item {i} costs  #36;{i}"'
        for i in range(per_class)
        for c in range(1, 5)
    ]
    (folder / "test.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def _cls(doc: str) -> str:
    return AGNEWS_CLASSES[int(doc.split()[1].split("-")[0]) - 1]


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("it #39;s", "it's"),
        ("In  quot;quotes quot; here", 'In "quotes" here'),
        ("costs  #36;10 or \\$5", "costs $10 or $5"),
        ("first\\second\\\\third", "first second third"),
        ('Inc. <A HREF="http://x">SPLS.O</A>, ok &lt;TXN.N&gt;', "Inc. SPLS.O , ok <TXN.N>"),
        ("a #151; b", "a— b"),
    ],
)
def test_clean_agnews_text(raw: str, clean: str) -> None:
    assert clean_agnews_text(raw) == clean


def test_reader_joins_title_and_description_per_class(tmp_path: Path) -> None:
    root = _fake_agnews(tmp_path, per_class=3)

    by_class = read_agnews(root / "agnews" / "test.csv")

    assert list(by_class) == list(AGNEWS_CLASSES)
    assert [len(v) for v in by_class.values()] == [3, 3, 3, 3]
    assert by_class["sports"][0] == "Title 2-0. Body of class 2 item 0 costs $0"


def test_reader_refuses_a_bad_class(tmp_path: Path) -> None:
    f = tmp_path / "test.csv"
    f.write_text('"1","t","d"\n"9","t","d"\n', encoding="utf-8")

    with pytest.raises(DataError, match=r"test\.csv:2"):
        read_agnews(f)


def test_specific_setting_two_peers_per_class(tmp_path: Path) -> None:
    root = _fake_agnews(tmp_path)

    fed = agnews_federation(root, docs_per_peer=8, val_docs=3, test_docs=4, reference_docs=8)

    assert len(fed.peers) == 8
    for i, peer in enumerate(fed.peers):
        expected = AGNEWS_CLASSES[i % 4]
        assert peer.domain_mix == {expected: 1.0}
        assert {_cls(d) for d in (*peer.train, *peer.val, *peer.test)} == {expected}
    assert Counter(_cls(d) for d in fed.reference) == dict.fromkeys(AGNEWS_CLASSES, 2)
    everything = [d for p in fed.peers for d in (*p.train, *p.val, *p.test)] + list(fed.reference)
    assert len(everything) == len(set(everything))


def test_mixed_setting_four_peers_75_25(tmp_path: Path) -> None:
    root = _fake_agnews(tmp_path)

    fed = agnews_federation(root, setting="mixed", docs_per_peer=12, val_docs=4, test_docs=8)

    assert len(fed.peers) == 4
    for i, peer in enumerate(fed.peers):
        major, minor = AGNEWS_CLASSES[i], AGNEWS_CLASSES[(i + 1) % 4]
        assert peer.domain_mix == {major: 0.75, minor: 0.25}
        assert Counter(_cls(d) for d in peer.train) == {major: 9, minor: 3}
        assert Counter(_cls(d) for d in peer.test) == {major: 6, minor: 2}


@needs_shared
def test_real_file_has_1900_clean_articles_per_class() -> None:
    by_class = read_agnews(SHARED_DATA / "agnews" / "test.csv")

    assert {k: len(v) for k, v in by_class.items()} == dict.fromkeys(AGNEWS_CLASSES, 1900)
    docs = [d for v in by_class.values() for d in v]
    assert not any(" #39;" in d or "quot;" in d or "\\" in d for d in docs)


@needs_shared
def test_real_file_mixed_federation_is_disjoint() -> None:
    fed = agnews_federation(SHARED_DATA, setting="mixed", seed=1)

    everything = [d for p in fed.peers for d in (*p.train, *p.val, *p.test)] + list(fed.reference)
    assert len(everything) == len(set(everything)) == 4 * (60 + 20 + 40) + 64
