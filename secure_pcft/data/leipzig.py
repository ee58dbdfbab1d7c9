"""The paper's language setting on Leipzig Corpora Collection sentence samples.

Files (``<shared_data_dir>/leipzig/``): one sentence per line, ``id<TAB>sentence``, shuffled, no
document structure, so a document here is one sentence. Peers: 9 by default; "specific": peer i
holds language ``i mod 3`` of (de, fr, it); "mixed": 75 % language ``i mod 3`` and 25 % language
``(i + 1) mod 3`` in every split. A public reference set takes an equal share of each language.
No sentence is held by two peers or by a peer and the reference set.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from secure_pcft.data.corpus import Federation
from secure_pcft.data.readers import shared_corpus_folder
from secure_pcft.data.splits import cyclic_federation
from secure_pcft.errors import DataError

logger = logging.getLogger(__name__)

LeipzigSetting = Literal["specific", "mixed"]
LeipzigGenre = Literal["wikipedia", "news"]

LEIPZIG_LANGUAGES: tuple[str, ...] = ("de", "fr", "it")
LEIPZIG_FILES: dict[str, dict[str, str]] = {
    "wikipedia": {
        "de": "deu_wikipedia_2021_10K-sentences.txt",
        "fr": "fra_wikipedia_2021_10K-sentences.txt",
        "it": "ita_wikipedia_2021_10K-sentences.txt",
    },
    "news": {
        "de": "deu_news_2023_10K-sentences.txt",
        "fr": "fra_news_2023_10K-sentences.txt",
        "it": "ita_news_2023_10K-sentences.txt",
    },
}
LEIPZIG_ATTRIBUTION = (
    "Leipzig Corpora Collection 10K-sentence samples (Goldhahn, Eckart & Quasthoff, LREC 2012), "
    "https://wortschatz.uni-leipzig.de, CC BY 4.0; Wikipedia-derived sentences are CC BY-SA in origin"
)
DEFAULT_PEERS = 9
DEFAULT_DOCS_PER_PEER = 60
MIXED_MAJOR_SHARE = 0.75


def read_leipzig_sentences(path: str | Path) -> list[str]:
    """Read a Leipzig ``*-sentences.txt`` file: the sentence column of ``id<TAB>sentence`` lines.

    Raises:
        DataError: missing file, invalid UTF-8, or a non-empty line without a tab.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataError(f"Leipzig file not found: {p}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: not valid UTF-8 (byte offset {exc.start})") from exc
    sentences: list[str] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        _, tab, sentence = line.partition("\t")
        if not tab:
            raise DataError(f"{p}:{lineno}: expected 'id<TAB>sentence'")
        if sentence.strip():
            sentences.append(sentence.strip())
    if not sentences:
        raise DataError(f"{p}: no sentence found")
    return sentences


def leipzig_dir(shared_data_dir: str | Path) -> Path:
    """``<shared_data_dir>/leipzig``, checked to exist.

    Raises:
        DataError: the folder is missing (the message gives the absolute path looked for).
    """
    return shared_corpus_folder(shared_data_dir, "leipzig", "Leipzig corpus folder")


def leipzig_federation(
    shared_data_dir: str | Path,
    *,
    setting: LeipzigSetting = "specific",
    num_peers: int = DEFAULT_PEERS,
    docs_per_peer: int = DEFAULT_DOCS_PER_PEER,
    val_docs: int | None = None,
    test_docs: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    reference_docs: int = 64,
    seed: int = 0,
    genre: LeipzigGenre = "wikipedia",
) -> Federation:
    """Build the paper's language-heterogeneity federation.

    Args:
        shared_data_dir: folder that holds ``leipzig/``.
        setting: ``"specific"`` (one language per peer) or ``"mixed"`` (75/25 language mixes).
        num_peers: peers (paper: 9).
        docs_per_peer: training sentences per peer.
        val_docs, test_docs: evaluation sentences per peer; ``None`` = :func:`eval_sizes` (at least
            20 / 40, else the fractions of the peer's whole data).
        val_fraction, test_fraction: used by :func:`eval_sizes` when sizes are not given.
        reference_docs: sentences in the public reference set (equal share per language).
        seed: seed of the deterministic shuffles.
        genre: ``"wikipedia"`` (the paper's files) or ``"news"``.

    Raises:
        DataError: missing folder or file, unknown setting/genre, or too few sentences.
    """
    if setting not in ("specific", "mixed"):
        raise DataError(f"Leipzig setting must be 'specific' or 'mixed', got {setting!r}")
    if genre not in LEIPZIG_FILES:
        raise DataError(f"Leipzig genre must be one of {tuple(LEIPZIG_FILES)}, got {genre!r}")
    folder = leipzig_dir(shared_data_dir)
    pools = {
        lang: read_leipzig_sentences(folder / LEIPZIG_FILES[genre][lang])
        for lang in LEIPZIG_LANGUAGES
    }
    fed = cyclic_federation(
        pools,
        num_peers=num_peers,
        major=1.0 if setting == "specific" else MIXED_MAJOR_SHARE,
        train_docs=docs_per_peer,
        val_docs=val_docs,
        test_docs=test_docs,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        reference_docs=reference_docs,
        seed=seed,
        name=f"leipzig-{genre}-{setting}",
        note=LEIPZIG_ATTRIBUTION,
    )
    logger.info("%s", fed.description)
    return fed
