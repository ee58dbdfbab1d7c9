"""Atomic writes: the target holds the old or the new content, never a temp file left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secure_pcft.fileio import write_json_atomic, write_text_atomic


def test_json_written_atomically_and_replaces_old_content(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "r.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"a": 2}, indent=1)
    assert json.loads(path.read_text()) == {"a": 2}
    assert path.read_text().endswith("\n")
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_nan_is_refused_and_the_old_file_survives(tmp_path: Path) -> None:
    path = write_text_atomic(tmp_path / "r.json", '{"ok": true}')
    with pytest.raises(ValueError):
        write_json_atomic(path, {"x": float("nan")})
    assert json.loads(path.read_text()) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names fds through /proc")
def test_the_file_and_then_its_folder_are_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    path = write_text_atomic(tmp_path / "r.json", "{}")
    assert len(synced) == 2
    assert Path(synced[0]).name.startswith(".r.json.tmp-")  # the content, before the rename
    assert Path(synced[1]) == tmp_path  # the rename, after it
    assert path.read_text() == "{}"
