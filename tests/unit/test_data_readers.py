"""Readers of user files: formats, folder order, and errors that name file and line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from secure_pcft.data.readers import (
    read_csv,
    read_documents,
    read_jsonl,
    read_subjects,
    read_txt,
    shared_corpus_folder,
)
from secure_pcft.errors import DataError


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_txt_lines_mode_keeps_nonempty_stripped_lines(tmp_path: Path) -> None:
    f = _write(tmp_path / "a.txt", "  first line \n\n\nsecond\u2028still second\r\nthird\n")

    docs = read_txt(f)

    assert docs == ["first line", "second\u2028still second", "third"]


def test_txt_paragraph_mode_joins_lines_between_blank_lines(tmp_path: Path) -> None:
    f = _write(tmp_path / "a.txt", "p1 l1\np1 l2\n\n  \np2\n\n\np3 l1\np3 l2")

    docs = read_txt(f, mode="paragraphs")

    assert docs == ["p1 l1 p1 l2", "p2", "p3 l1 p3 l2"]


def test_txt_accepts_a_utf8_bom_and_rejects_invalid_utf8(tmp_path: Path) -> None:
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeffÄrger\n".encode())
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xff\xfe broken\n")

    assert read_txt(bom) == ["Ärger"]
    with pytest.raises(DataError, match="UTF-8"):
        read_txt(bad)


def test_jsonl_reads_the_named_field(tmp_path: Path) -> None:
    lines = [json.dumps({"text": "a", "body": "x"}), "", json.dumps({"text": "b", "body": "y"})]
    f = _write(tmp_path / "d.jsonl", "\n".join(lines))

    assert read_jsonl(f) == ["a", "b"]
    assert read_jsonl(f, field="body") == ["x", "y"]


def test_jsonl_bad_line_reports_its_line_number_not_its_content(tmp_path: Path) -> None:
    f = _write(tmp_path / "d.jsonl", '{"text": "fine"}\n{"text": "secret payload"\n')

    with pytest.raises(DataError, match=r"d\.jsonl:2: not valid UTF-8 JSON") as info:
        read_jsonl(f)
    assert "secret payload" not in str(info.value)


@pytest.mark.parametrize(
    "line",
    ["[" * 10_000 + "]" * 10_000, '{"text": "a", "n": ' + "9" * 5_000 + "}"],
    ids=["nested-10000-deep", "5000-digit-number"],
)
def test_jsonl_hostile_lines_are_data_errors(tmp_path: Path, line: str) -> None:
    """Plain json.loads raises RecursionError / ValueError on these: untyped, not DataError."""
    f = _write(tmp_path / "d.jsonl", '{"text": "fine"}\n' + line + "\n")
    with pytest.raises(DataError, match=r"d\.jsonl:2"):
        read_jsonl(f)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"other": 1}', "missing field 'text'"),
        ('{"text": 3}', "must be a string"),
        ("[1]", "JSON object"),
    ],
)
def test_jsonl_wrong_records_are_refused(tmp_path: Path, line: str, message: str) -> None:
    f = _write(tmp_path / "d.jsonl", '{"text": "ok"}\n' + line + "\n")

    with pytest.raises(DataError, match=message):
        read_jsonl(f)


def test_csv_reads_named_column_including_quoted_newlines(tmp_path: Path) -> None:
    f = _write(tmp_path / "d.csv", 'id,text,body\n1,"hello, world",x\n2,"two\nlines",y\n3,,z\n')

    assert read_csv(f) == ["hello, world", "two\nlines"]
    assert read_csv(f, column="body") == ["x", "y", "z"]


def test_csv_missing_column_lists_the_columns(tmp_path: Path) -> None:
    f = _write(tmp_path / "d.csv", "id,body\n1,x\n")

    with pytest.raises(DataError, match=r"no column 'text'; columns are \['id', 'body'\]"):
        read_csv(f)


def test_folder_reads_supported_files_in_sorted_order(tmp_path: Path) -> None:
    _write(tmp_path / "b.jsonl", json.dumps({"text": "from b"}) + "\n")
    _write(tmp_path / "a.txt", "from a\n")
    _write(tmp_path / "c.csv", "text\nfrom c\n")
    _write(tmp_path / "notes.md", "ignored\n")

    assert read_documents(tmp_path) == ["from a", "from b", "from c"]


def test_read_documents_errors(tmp_path: Path) -> None:
    empty = _write(tmp_path / "empty.txt", "\n  \n")
    odd = _write(tmp_path / "data.json", "{}")
    no_supported = tmp_path / "sub"
    no_supported.mkdir()
    _write(no_supported / "x.md", "text")

    with pytest.raises(DataError, match="not found"):
        read_documents(tmp_path / "missing.txt")
    with pytest.raises(DataError, match=r"unsupported file type '\.json'"):
        read_documents(odd)
    with pytest.raises(DataError, match="no non-empty document"):
        read_documents(empty)
    with pytest.raises(DataError, match="holds no"):
        read_documents(no_supported)


def test_shared_corpus_folder_returns_the_folder_or_names_the_missing_path(tmp_path: Path) -> None:
    (tmp_path / "agnews").mkdir()

    assert shared_corpus_folder(tmp_path, "agnews", "AG News folder") == tmp_path / "agnews"
    with pytest.raises(DataError) as info:
        shared_corpus_folder(tmp_path, "leipzig", "Leipzig corpus folder")
    assert str(info.value) == (
        f"Leipzig corpus folder not found: {(tmp_path / 'leipzig').resolve()} (set [data] "
        "shared_data_dir to the folder that holds leipzig/)"
    )


def test_subjects_come_from_a_named_jsonl_field_or_csv_column(tmp_path: Path) -> None:
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "a.jsonl").write_text(
        json.dumps({"text": "pump report one", "author": "op-7"}) + "\n"
        + json.dumps({"text": "valve report", "author": 12}) + "\n"
        + json.dumps({"text": "  ", "author": "op-7"}) + "\n",  # no document: skipped
        encoding="utf-8",
    )  # fmt: skip
    (folder / "b.csv").write_text('text,author\n"pump report two",op-7\n', encoding="utf-8")
    assert read_subjects(folder, subject_field="author") == {
        "pump report one": "op-7", "valve report": "12", "pump report two": "op-7",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.jsonl", '{"text": "x"}\n', "a.jsonl:1: missing subject field 'author'"),
        ("a.jsonl", '{"text": "x", "author": ["op"]}\n', "string or an integer"),
        ("a.jsonl", '{"text": "x", "author": " "}\n', "is empty"),
        ("a.csv", "text,who\nx,op\n", "no subject column 'author'"),
        ("a.txt", "x\n", "needs .jsonl or .csv"),
    ],
)
def test_a_record_without_a_usable_subject_is_refused(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(message)):
        read_subjects(tmp_path / name, subject_field="author")
