"""Atomic writes: the target holds the old or the new content, never a temp file left behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from secure_pcft.fileio import json_safe, write_json_atomic, write_text_atomic


def test_json_written_atomically_and_replaces_old_content(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "r.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"a": 2}, indent=1)
    assert json.loads(path.read_text()) == {"a": 2}
    assert path.read_text().endswith("\n")
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_an_unserialisable_value_is_refused_and_the_old_file_survives(tmp_path: Path) -> None:
    path = write_text_atomic(tmp_path / "r.json", '{"ok": true}')
    with pytest.raises(TypeError):
        write_json_atomic(path, {"x": object()})
    assert json.loads(path.read_text()) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_non_finite_numbers_are_written_as_strings_not_refused(tmp_path: Path) -> None:
    # RunResult.write_json raised on a NaN perplexity (a diverged peer) and lost the whole result
    path = write_json_atomic(
        tmp_path / "r.json",
        {"ppl": float("nan"), "eps": float("inf"), "n": np.float32(2.5), "t": (1, Path("a"))},
    )
    assert json.loads(path.read_text()) == {"ppl": "nan", "eps": "inf", "n": 2.5, "t": [1, "a"]}
    assert json_safe({1: [float("-inf")]}) == {"1": ["-inf"]}


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
