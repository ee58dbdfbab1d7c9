"""Cached model directories: atomic creation and the build record that pins every file's SHA-256."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from secure_pcft.errors import CorruptFileError
from secure_pcft.model import cache
from secure_pcft.model.cache import (
    BUILD_INFO,
    atomic_directory,
    file_digests,
    read_build_info,
    save_model_dir,
    sha256_file,
    write_build_info,
)


def test_interrupted_rebuild_keeps_the_old_directory(tmp_path: Path) -> None:
    target = tmp_path / "d"
    target.mkdir()
    (target / "old.txt").write_text("old", encoding="utf-8")

    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "new.txt").write_text("new", encoding="utf-8")
        raise RuntimeError("killed")

    assert [p.name for p in target.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_atomic_directory_replaces_the_old_directory(tmp_path: Path) -> None:
    target = tmp_path / "d"
    target.mkdir()
    (target / "old.txt").write_text("old", encoding="utf-8")

    with atomic_directory(target) as tmp:
        (tmp / "new.txt").write_text("new", encoding="utf-8")

    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_stale_leftovers_are_swept_fresh_ones_kept(tmp_path: Path) -> None:
    stale = tmp_path / ".tmp-d-old"
    fresh = tmp_path / ".tmp-d-new"
    stale.mkdir()
    fresh.mkdir()
    past = time.time() - cache._STALE_TMP_SECONDS - 60
    os.utime(stale, (past, past))

    with atomic_directory(tmp_path / "d") as tmp:
        (tmp / "x").write_text("x", encoding="utf-8")

    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-d-new", "d"]


def test_digests_are_the_sha256_of_every_file_but_the_record(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"\x00" * (3 << 20))  # several read chunks
    (tmp_path / "sub" / "b.txt").write_text("b", encoding="utf-8")
    (tmp_path / BUILD_INFO).write_text("{}", encoding="utf-8")

    digests = file_digests(tmp_path)

    assert digests == {
        "a.bin": hashlib.sha256(b"\x00" * (3 << 20)).hexdigest(),
        "sub/b.txt": hashlib.sha256(b"b").hexdigest(),
    }
    assert sha256_file(tmp_path / "sub" / "b.txt") == digests["sub/b.txt"]


def test_build_record_round_trip_and_tampering_is_refused(tmp_path: Path) -> None:
    (tmp_path / "w.bin").write_bytes(b"weights")
    write_build_info(tmp_path, {"kind": "test"})

    info = read_build_info(tmp_path, required=("w.bin",))
    (tmp_path / "w.bin").write_bytes(b"weightz")

    assert info == {"kind": "test", "files": {"w.bin": hashlib.sha256(b"weights").hexdigest()}}
    with pytest.raises(CorruptFileError, match="files differ"):
        read_build_info(tmp_path, required=("w.bin",))
    with pytest.raises(CorruptFileError, match=r"missing config\.json"):
        read_build_info(tmp_path)


class _Saver:
    """Stands in for a transformers model/tokenizer: only ``save_pretrained`` matters here."""

    def __init__(self, name: str) -> None:
        self.name = name

    def save_pretrained(self, directory: Path, **kwargs: Any) -> None:
        (Path(directory) / self.name).write_text(json.dumps(sorted(kwargs)), encoding="utf-8")


def test_save_model_dir_writes_files_and_a_verifiable_record(tmp_path: Path) -> None:
    info: dict[str, Any] = {"kind": "test"}
    out = tmp_path / "bases" / "m"

    save_model_dir(out, _Saver("model.json"), _Saver("tok.json"), info, time.perf_counter())

    assert info["build_seconds"] >= 0
    record = read_build_info(out, required=("model.json", "tok.json"))
    assert record["kind"] == "test" and set(record["files"]) == {"model.json", "tok.json"}
    assert (out / "model.json").read_text(encoding="utf-8") == '["safe_serialization"]'


def test_a_second_builder_waits_for_the_first_and_then_reuses_its_build(tmp_path: Path) -> None:
    """Two first runs at once: the lock lets one build; the other waits and finds the build."""
    import threading

    from secure_pcft.model.cache import cache_lock

    target = tmp_path / "bases" / "small-x"
    builds: list[str] = []
    first_inside, release = threading.Event(), threading.Event()

    def build(name: str, hold: bool) -> None:
        with cache_lock(target):
            if target.exists():  # what ensure_small_base checks again inside the lock
                return
            if hold:
                first_inside.set()
                release.wait(10)
            target.mkdir(parents=True)
            builds.append(name)

    first = threading.Thread(target=build, args=("first", True))
    first.start()
    assert first_inside.wait(10)
    second = threading.Thread(target=build, args=("second", False))
    second.start()
    second.join(0.3)
    assert second.is_alive()  # waiting on the lock, not building
    release.set()
    first.join(10)
    second.join(10)

    assert builds == ["first"]
