"""The paper's topic setting on AG News (original ``test.csv``: 7,600 articles, 1,900 per class).

A document is ``title + ". " + description`` with the dataset's escapes cleaned (see
:func:`clean_agnews_text`). Peers: "specific": 8 peers, peer i holds class ``i mod 4`` (so two
peers per class, and the first four peers cover all classes, as in the language setting);
"mixed": 4 peers, 75 % class ``i mod 4`` and 25 % class ``(i + 1) mod 4`` in every split. A public
reference set takes an equal share of each class. No article is held by two peers or by a peer and
the reference set.
"""

from __future__ import annotations

import csv
import html
import io
import logging
import re
from pathlib import Path
from typing import Literal

from secure_pcft.data.corpus import Federation
from secure_pcft.data.readers import shared_corpus_folder
from secure_pcft.data.splits import cyclic_federation
from secure_pcft.errors import DataError

logger = logging.getLogger(__name__)

AgNewsSetting = Literal["specific", "mixed"]

#: Domain names, in class order 1..4 (World, Sports, Business, Sci/Tech).
AGNEWS_CLASSES: tuple[str, ...] = ("world", "sports", "business", "sci_tech")
AGNEWS_FILE = "test.csv"
AGNEWS_ATTRIBUTION = (
    "AG News (Zhang, Zhao & LeCun, NIPS 2015; from the AG corpus of news articles, A. Gulli), "
    "academic / non-commercial use only (see agnews/readme.txt)"
)
DEFAULT_PEERS = {"specific": 8, "mixed": 4}
DEFAULT_DOCS_PER_PEER = 60
MIXED_MAJOR_SHARE = 0.75

# The dump replaced the "&" of some entities by a space: "doesn #39;t", "In  quot;help".
_BARE_ENTITY = re.compile(r"(?:^|\s)(#\d+|quot|amp|lt|gt);")
# Reuters items carry markup (<A HREF=...>SPLS.O</A>, <font ...>, <b>); keep the link text. Only
# these tag names are removed, so ticker symbols such as <TXN.N> survive.
_HTML_TAG = re.compile(r"</?(?:a|b|p|br|font|strong|nobr|em|img|i)\b[^<>]*>", re.IGNORECASE)
_BACKSLASH = re.compile(r"\\+")
_SPACES = re.compile(r"\s+")


def clean_agnews_text(text: str) -> str:
    r"""Undo AG News' escapes and collapse whitespace.

    `` #39;`` / `` quot;`` are HTML entities whose ``&`` became a space; ``\$`` is an escaped
    dollar; other backslashes stood for line breaks; simple HTML tags are dropped (their text
    stays). Example: ``Oil at  #36;50\a barrel, it #39;s  quot;high quot;`` becomes
    ``Oil at $50 a barrel, it's "high"``.
    """
    text = text.replace("\\$", "$")
    text = _BACKSLASH.sub(" ", text)
    text = _BARE_ENTITY.sub(r"&\1;", text)
    text = html.unescape(text)  # also maps the cp1252 codes &#145;..&#151; to quotes and dashes
    text = _HTML_TAG.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def _join(title: str, description: str) -> str:
    if not title:
        return description
    if not description:
        return title
    sep = " " if title[-1] in ".!?" else ". "
    return title + sep + description


def read_agnews(path: str | Path) -> dict[str, list[str]]:
    """Read an AG News CSV (``"class","title","description"``, no header) into documents per class.

    Returns:
        ``{class name: documents}`` in :data:`AGNEWS_CLASSES` order, documents in file order.

    Raises:
        DataError: missing or malformed file, or a class label outside 1..4.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataError(f"AG News file not found: {p}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: not valid UTF-8 (byte offset {exc.start})") from exc
    by_class: dict[str, list[str]] = {name: [] for name in AGNEWS_CLASSES}
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            if not row:
                continue
            if len(row) != 3 or row[0] not in ("1", "2", "3", "4"):
                raise DataError(
                    f'{p}:{reader.line_num}: expected "class(1-4)","title","description"'
                )
            doc = _join(clean_agnews_text(row[1]), clean_agnews_text(row[2]))
            if doc:
                by_class[AGNEWS_CLASSES[int(row[0]) - 1]].append(doc)
    except csv.Error as exc:
        raise DataError(f"{p}:{reader.line_num}: malformed CSV ({exc})") from exc
    return by_class


def agnews_dir(shared_data_dir: str | Path) -> Path:
    """``<shared_data_dir>/agnews``, checked to exist.

    Raises:
        DataError: the folder is missing (the message gives the absolute path looked for).
    """
    return shared_corpus_folder(shared_data_dir, "agnews", "AG News folder")


def agnews_federation(
    shared_data_dir: str | Path,
    *,
    setting: AgNewsSetting = "specific",
    num_peers: int | None = None,
    docs_per_peer: int = DEFAULT_DOCS_PER_PEER,
    val_docs: int | None = None,
    test_docs: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    reference_docs: int = 64,
    seed: int = 0,
) -> Federation:
    """Build the paper's topic-heterogeneity federation.

    Args:
        shared_data_dir: folder that holds ``agnews/``.
        setting: ``"specific"`` (one class per peer) or ``"mixed"`` (75/25 class mixes).
        num_peers: peers; ``None`` = the paper's 8 (specific) or 4 (mixed).
        docs_per_peer: training articles per peer.
        val_docs, test_docs: evaluation articles per peer; ``None`` = :func:`eval_sizes`.
        val_fraction, test_fraction: used by :func:`eval_sizes` when sizes are not given.
        reference_docs: articles in the public reference set (equal share per class).
        seed: seed of the deterministic shuffles.

    Raises:
        DataError: missing folder or file, unknown setting, or too few articles.
    """
    if setting not in DEFAULT_PEERS:
        raise DataError(f"AG News setting must be 'specific' or 'mixed', got {setting!r}")
    pools = read_agnews(agnews_dir(shared_data_dir) / AGNEWS_FILE)
    fed = cyclic_federation(
        pools,
        num_peers=DEFAULT_PEERS[setting] if num_peers is None else num_peers,
        major=1.0 if setting == "specific" else MIXED_MAJOR_SHARE,
        train_docs=docs_per_peer,
        val_docs=val_docs,
        test_docs=test_docs,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        reference_docs=reference_docs,
        seed=seed,
        name=f"agnews-{setting}",
        note=AGNEWS_ATTRIBUTION,
    )
    logger.info("%s", fed.description)
    return fed
