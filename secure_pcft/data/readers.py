"""Read a user's own text files into documents (plain strings, one per record).

Supported: ``.txt`` (one document per non-empty line, or per blank-line-separated paragraph),
``.jsonl`` (one JSON object per line, the text in a named field) and ``.csv`` (a header row, the
text in a named column). A path may also be a folder: its supported files are read in sorted name
order (not recursively). Files are decoded as UTF-8 (a leading BOM is accepted); nothing is ever
evaluated. Error messages name the file and the line or row, never the text itself: it is private.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

from secure_pcft import bounded_json
from secure_pcft.errors import DataError

logger = logging.getLogger(__name__)

TxtMode = Literal["lines", "paragraphs"]
SUPPORTED_EXTENSIONS: tuple[str, ...] = (".txt", ".jsonl", ".csv")

# One JSONL record of a user's corpus: any size a line may have, nesting and numbers bounded so a
# malformed line is a DataError (not RecursionError / ValueError); NaN and duplicate keys allowed.
_RECORD_LIMITS = bounded_json.JsonLimits(
    max_bytes=256 * 1024 * 1024, max_depth=64, max_number_chars=4000, strict=False
)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 (byte offset {exc.start})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})") from exc


def shared_corpus_folder(shared_data_dir: str | Path, name: str, label: str) -> Path:
    """``<shared_data_dir>/<name>`` (a benchmark corpus folder), checked to exist.

    Args:
        shared_data_dir: the ``[data] shared_data_dir`` root.
        name: the corpus folder's name (``leipzig``, ``agnews``).
        label: what the folder is, for the error message (``"AG News folder"``).

    Raises:
        DataError: the folder is missing (the message gives the absolute path looked for).
    """
    folder = Path(shared_data_dir).expanduser() / name
    if not folder.is_dir():
        raise DataError(
            f"{label} not found: {folder.resolve()} (set [data] shared_data_dir to the folder "
            f"that holds {name}/)"
        )
    return folder


def read_txt(path: str | Path, *, mode: TxtMode = "lines") -> list[str]:
    """Read a plain-text file.

    Args:
        path: a ``.txt`` file.
        mode: ``"lines"``: every non-empty line is a document; ``"paragraphs"``: blocks of lines
            separated by one or more blank lines are documents (their lines joined by a space).

    Returns:
        The documents, stripped, in file order (may be empty).

    Raises:
        DataError: unreadable file, invalid UTF-8 or unknown ``mode``.
    """
    p = Path(path)
    # split("\n"), not splitlines(): the latter also cuts at U+2028, form feeds and the like
    lines = _read_text(p).split("\n")
    if mode == "lines":
        return [s for s in (line.strip() for line in lines) if s]
    if mode == "paragraphs":
        docs: list[str] = []
        current: list[str] = []
        for line in [*lines, ""]:
            s = line.strip()
            if s:
                current.append(s)
            elif current:
                docs.append(" ".join(current))
                current = []
        return docs
    raise DataError(f"txt mode must be 'lines' or 'paragraphs', got {mode!r}")


def read_jsonl(path: str | Path, *, field: str = "text") -> list[str]:
    """Read a JSON-lines file: one JSON object per non-blank line, the document in ``field``.

    Raises:
        DataError: invalid JSON (with its line number), a line that is not an object, a missing
            field or a field that is not a string.
    """
    p = Path(path)
    docs: list[str] = []
    for lineno, line in enumerate(_read_text(p).split("\n"), start=1):
        if not line.strip():
            continue
        record = bounded_json.loads(line, _RECORD_LIMITS, DataError, f"{p}:{lineno}")
        if not isinstance(record, dict):
            raise DataError(f"{p}:{lineno}: expected a JSON object, got {type(record).__name__}")
        if field not in record:
            raise DataError(f"{p}:{lineno}: missing field {field!r}")
        value = record[field]
        if not isinstance(value, str):
            raise DataError(
                f"{p}:{lineno}: field {field!r} must be a string, got {type(value).__name__}"
            )
        if value.strip():
            docs.append(value.strip())
    return docs


def read_csv(path: str | Path, *, column: str = "text") -> list[str]:
    """Read a CSV file with a header row; the document is in ``column``.

    Raises:
        DataError: no header, a missing column (the message lists the columns found) or a
            malformed row (with its line number).
    """
    p = Path(path)
    rows = csv.DictReader(
        io.StringIO(_read_text(p), newline="")
    )  # newline="" keeps quoted newlines
    docs: list[str] = []
    try:
        if rows.fieldnames is None:
            raise DataError(f"{p}: empty CSV file (no header row)")
        if column not in rows.fieldnames:
            raise DataError(f"{p}: no column {column!r}; columns are {list(rows.fieldnames)}")
        for row in rows:
            value = row.get(column)
            if value and value.strip():
                docs.append(value.strip())
    except csv.Error as exc:
        raise DataError(f"{p}:{rows.line_num}: malformed CSV ({exc})") from exc
    return docs


def _files_in(folder: Path) -> Iterator[Path]:
    skipped = 0
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_file() and child.suffix.lower() in SUPPORTED_EXTENSIONS:
            yield child
        else:
            skipped += 1
    if skipped:
        logger.info(
            "%s: skipped %d entries that are not %s files", folder, skipped, SUPPORTED_EXTENSIONS
        )


def read_documents(
    path: str | Path, *, txt_mode: TxtMode = "lines", field: str = "text"
) -> list[str]:
    """Read one file, or every supported file of a folder (sorted by name), into documents.

    Args:
        path: a ``.txt`` / ``.jsonl`` / ``.csv`` file, or a folder holding such files.
        txt_mode: how ``.txt`` files are cut into documents (see :func:`read_txt`).
        field: the JSON field (``.jsonl``) or CSV column (``.csv``) holding the text.

    Returns:
        The non-empty, stripped documents in file order.

    Raises:
        DataError: missing path, unsupported extension, a malformed file (see the per-format
            readers), or no document at all.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"data path not found: {p}")
    files = list(_files_in(p)) if p.is_dir() else [p]
    if not files:
        raise DataError(f"{p}: folder holds no {'/'.join(SUPPORTED_EXTENSIONS)} files")
    docs: list[str] = []
    for f in files:
        docs.extend(_reader_for(f, txt_mode=txt_mode, field=field)(f))
    if not docs:
        raise DataError(f"{p}: no non-empty document found")
    return docs


def _reader_for(path: Path, *, txt_mode: TxtMode, field: str) -> Callable[[Path], list[str]]:
    ext = path.suffix.lower()
    if ext == ".txt":
        return lambda f: read_txt(f, mode=txt_mode)
    if ext == ".jsonl":
        return lambda f: read_jsonl(f, field=field)
    if ext == ".csv":
        return lambda f: read_csv(f, column=field)
    raise DataError(
        f"{path}: unsupported file type {ext or '(none)'!r}; use one of {SUPPORTED_EXTENSIONS}"
    )


def _subject_value(value: object, where: str, subject_field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(
            f"{where}: subject field {subject_field!r} must be a string or an integer, got "
            f"{type(value).__name__}"
        )
    text = str(value).strip()
    if not text:
        raise DataError(f"{where}: subject field {subject_field!r} is empty")
    return text


def _jsonl_subjects(p: Path, field: str, subject_field: str) -> Iterator[tuple[str, str]]:
    for lineno, line in enumerate(_read_text(p).split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{p}:{lineno}"
        record = bounded_json.loads(line, _RECORD_LIMITS, DataError, where)
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
        text = record.get(field)
        if not isinstance(text, str) or not text.strip():
            continue  # read_jsonl refuses what is malformed; empty texts are no documents
        if subject_field not in record:
            raise DataError(f"{where}: missing subject field {subject_field!r}")
        yield text.strip(), _subject_value(record[subject_field], where, subject_field)


def _csv_subjects(p: Path, column: str, subject_field: str) -> Iterator[tuple[str, str]]:
    rows = csv.DictReader(io.StringIO(_read_text(p), newline=""))
    try:
        if rows.fieldnames is None or subject_field not in rows.fieldnames:
            found = [] if rows.fieldnames is None else list(rows.fieldnames)
            raise DataError(f"{p}: no subject column {subject_field!r}; columns are {found}")
        for row in rows:
            text = row.get(column)
            if text and text.strip():
                where = f"{p}:{rows.line_num}"
                yield (
                    text.strip(),
                    _subject_value(row.get(subject_field) or "", where, subject_field),
                )
    except csv.Error as exc:
        raise DataError(f"{p}:{rows.line_num}: malformed CSV ({exc})") from exc


def read_subjects(path: str | Path, *, field: str = "text", subject_field: str) -> dict[str, str]:
    """The data subject of each document of ``path`` (a ``.jsonl``/``.csv`` file or a folder of
    them): document text → the value of ``subject_field`` (a string or integer).

    A text that two subjects both hold is attributed to the first (the de-duplicated document is
    trained on once; the count is logged, never the text).

    Raises:
        DataError: a ``.txt`` file (plain text names no subject), a record without the subject
            field or with an empty or non-scalar one (with its line), or what
            :func:`read_documents` raises.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"data path not found: {p}")
    subjects: dict[str, str] = {}
    shared = 0
    for f in list(_files_in(p)) if p.is_dir() else [p]:
        ext = f.suffix.lower()
        if ext == ".jsonl":
            pairs = _jsonl_subjects(f, field, subject_field)
        elif ext == ".csv":
            pairs = _csv_subjects(f, field, subject_field)
        else:
            raise DataError(
                f"{f}: [data] subject_field needs .jsonl or .csv records (a {ext or 'plain'} "
                "file names no subject)"
            )
        for text, subject in pairs:
            held = subjects.setdefault(text, subject)
            shared += held != subject
    if shared:
        logger.warning(
            "%s: %d documents appear under two subjects; each is attributed to the first", p, shared
        )
    return subjects
