"""Leipzig language setting: file format, disjoint peers, the paper's language mixes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from secure_pcft.data.leipzig import (
    LEIPZIG_FILES,
    LeipzigSetting,
    leipzig_federation,
    read_leipzig_sentences,
)
from secure_pcft.errors import DataError

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not (SHARED_DATA / "leipzig").is_dir(), reason=f"benchmark corpora not at {SHARED_DATA}"
)


def _fake_leipzig(root: Path, n: int = 200) -> Path:
    folder = root / "leipzig"
    folder.mkdir()
    for lang, name in LEIPZIG_FILES["wikipedia"].items():
        lines = [f"{i + 1}\t{lang} satz {i} ." for i in range(n)]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _lang(doc: str) -> str:
    return doc.split()[0]


def test_reader_takes_the_sentence_column(tmp_path: Path) -> None:
    f = tmp_path / "x.txt"
    f.write_text("1\tErster Satz.\n\n2\tZweiter\tmit Tab.\n", encoding="utf-8")

    assert read_leipzig_sentences(f) == ["Erster Satz.", "Zweiter\tmit Tab."]


def test_reader_refuses_lines_without_id(tmp_path: Path) -> None:
    f = tmp_path / "x.txt"
    f.write_text("1\tok\nno tab here\n", encoding="utf-8")

    with pytest.raises(DataError, match=r"x\.txt:2: expected 'id<TAB>sentence'"):
        read_leipzig_sentences(f)


def test_missing_folder_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=str(tmp_path / "leipzig")):
        leipzig_federation(tmp_path)


def test_specific_setting_on_synthetic_files(tmp_path: Path) -> None:
    root = _fake_leipzig(tmp_path)

    fed = leipzig_federation(root, docs_per_peer=10, val_docs=3, test_docs=5, reference_docs=6)

    assert len(fed.peers) == 9
    assert fed.domains == ("de", "fr", "it")
    for i, peer in enumerate(fed.peers):
        expected = ("de", "fr", "it")[i % 3]
        assert peer.domain_mix == {expected: 1.0}
        assert {_lang(d) for d in (*peer.train, *peer.val, *peer.test)} == {expected}
    assert Counter(_lang(d) for d in fed.reference) == {"de": 2, "fr": 2, "it": 2}


def test_mixed_setting_splits_follow_the_75_25_mix(tmp_path: Path) -> None:
    root = _fake_leipzig(tmp_path)

    fed = leipzig_federation(root, setting="mixed", docs_per_peer=20, val_docs=8, test_docs=12)

    for i, peer in enumerate(fed.peers):
        major, minor = ("de", "fr", "it")[i % 3], ("de", "fr", "it")[(i + 1) % 3]
        assert peer.domain_mix == {major: 0.75, minor: 0.25}
        assert Counter(_lang(d) for d in peer.train) == {major: 15, minor: 5}
        assert Counter(_lang(d) for d in peer.val) == {major: 6, minor: 2}
        assert Counter(_lang(d) for d in peer.test) == {major: 9, minor: 3}


def test_too_many_docs_is_a_clear_error(tmp_path: Path) -> None:
    root = _fake_leipzig(tmp_path, n=50)

    with pytest.raises(DataError, match="lower docs_per_peer"):
        leipzig_federation(root, docs_per_peer=60)


SETTINGS: tuple[LeipzigSetting, ...] = ("specific", "mixed")


@needs_shared
@pytest.mark.parametrize("setting", SETTINGS)
def test_real_files_peers_disjoint_with_default_sizes(setting: LeipzigSetting) -> None:
    fed = leipzig_federation(SHARED_DATA, setting=setting, seed=0)

    all_docs = [d for p in fed.peers for d in (*p.train, *p.val, *p.test)] + list(fed.reference)
    assert len(all_docs) == len(set(all_docs)) == 9 * (60 + 20 + 40) + 64
    assert all(len(p.train) == 60 and len(p.val) == 20 and len(p.test) == 40 for p in fed.peers)
    assert fed == leipzig_federation(SHARED_DATA, setting=setting, seed=0)
