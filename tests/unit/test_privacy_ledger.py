"""The durable privacy ledger: round trip, format, tampering, torn appends, locking, durability."""

from __future__ import annotations

import itertools
import json
import logging
import os
import stat
from pathlib import Path

import pytest

from secure_pcft.errors import LedgerBusyError, LedgerError, PrivacyError
from secure_pcft.privacy import DpEvent, PrivacyLedger, epsilon_spent, ledger_path, read_ledger
from secure_pcft.privacy.events import record_hash

DELTA = 1e-4


def open_ledger(path: Path, **overrides: object) -> PrivacyLedger:
    kwargs: dict[str, object] = {
        "peer_id": "peer-0",
        "delta": DELTA,
        "budget_epsilon": 8.0,
        "accountant": "rdp",
    }
    kwargs.update(overrides)
    return PrivacyLedger.open(path, **kwargs)  # type: ignore[arg-type]


def event(steps: int = 20, rnd: int = 0, released: str = "adapter") -> DpEvent:
    return DpEvent("dp-sgd", 1.1, 0.02, steps, rnd, released, ("peer-1", "peer-2"))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return ledger_path(tmp_path / "ledgers", "peer-0")


@pytest.fixture
def filled(path: Path) -> Path:
    """A closed ledger with genesis + 4 events."""
    with open_ledger(path) as ledger:
        ledger.append([event(40, 0)])
        ledger.append(
            [event(20, 1), DpEvent("gaussian-validation", 3.0, 1.0, 2, 1, "validation-scores")]
        )
        ledger.append([event(20, 2)])
    return path


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def write_lines(path: Path, rows: list[bytes]) -> None:
    path.write_bytes(b"".join(r + b"\n" for r in rows))


def test_round_trip_keeps_every_event_in_order(filled: Path) -> None:
    contents = read_ledger(filled)

    with open_ledger(filled) as reopened:
        assert reopened.entries == contents.entries
    assert [e.seq for e in contents.entries] == [1, 2, 3, 4]
    assert [e.event.steps for e in contents.entries] == [40, 20, 2, 20]
    assert contents.events[2].mechanism == "gaussian-validation"
    assert contents.events[0].recipients == ("peer-1", "peer-2")
    assert contents.genesis.peer_id == "peer-0"
    assert contents.genesis.delta == DELTA
    assert contents.genesis.budget_epsilon == 8.0
    assert contents.head.count == 5


def test_file_format_is_canonical_hash_chained_json_lines(filled: Path) -> None:
    rows = [json.loads(r) for r in lines(filled)]

    assert rows[0]["kind"] == "genesis"
    assert rows[0]["prev_hash"] == "0" * 64
    assert rows[0]["accountant"] == "rdp"
    # ε is never stored, only recomputed (the genesis holds the budget, not a spent amount).
    assert {k for row in rows for k in row if "epsilon" in k} == {"budget_epsilon"}
    for prev, row in itertools.pairwise(rows):
        assert row["kind"] == "event"
        assert row["prev_hash"] == prev["hash"]
        body = {k: v for k, v in row.items() if k != "hash"}
        assert record_hash(body) == row["hash"]
    head = json.loads(filled.with_name(filled.name + ".head").read_text())
    assert head == {"count": 5, "format": "secure-pcft-ledger/1", "hash": rows[-1]["hash"]}
    assert stat.S_IMODE(filled.stat().st_mode) == 0o600


def test_edited_field_is_rejected(filled: Path) -> None:
    rows = lines(filled)
    rows[1] = rows[1].replace(b'"steps":40', b'"steps":4')
    write_lines(filled, rows)

    with pytest.raises(LedgerError, match="line 2: hash does not match"):
        read_ledger(filled)
    with pytest.raises(LedgerError):
        open_ledger(filled)


def test_edited_field_with_recomputed_hash_breaks_the_chain(filled: Path) -> None:
    rows = lines(filled)
    obj = json.loads(rows[1])
    obj["steps"] = 1
    obj["hash"] = record_hash({k: v for k, v in obj.items() if k != "hash"})
    rows[1] = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    write_lines(filled, rows)

    with pytest.raises(LedgerError, match="line 3: hash chain broken"):
        read_ledger(filled)


def test_reordered_lines_are_rejected(filled: Path) -> None:
    rows = lines(filled)
    rows[2], rows[3] = rows[3], rows[2]
    write_lines(filled, rows)

    with pytest.raises(LedgerError, match="line 3: sequence"):
        read_ledger(filled)


def test_deleted_middle_line_is_rejected(filled: Path) -> None:
    rows = lines(filled)
    del rows[2]
    write_lines(filled, rows)

    with pytest.raises(LedgerError, match="line 3"):
        read_ledger(filled)


def test_appended_forged_line_is_rejected(filled: Path) -> None:
    rows = lines(filled)
    forged = json.loads(rows[-1])
    forged.update(seq=5, prev_hash=forged["hash"], hash="ab" * 32)
    rows.append(json.dumps(forged, sort_keys=True, separators=(",", ":")).encode())
    write_lines(filled, rows)

    with pytest.raises(LedgerError, match="line 6: hash does not match"):
        read_ledger(filled)


def test_non_canonical_or_extra_field_is_rejected(filled: Path) -> None:
    rows = lines(filled)
    obj = json.loads(rows[2])
    obj["note"] = "x"
    obj["hash"] = record_hash({k: v for k, v in obj.items() if k != "hash"})
    rows[2] = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    write_lines(filled, rows)

    with pytest.raises(LedgerError, match="line 3"):
        read_ledger(filled)


def test_whole_lines_cut_from_the_end_are_caught_by_the_high_water_mark(filled: Path) -> None:
    rows = lines(filled)
    write_lines(filled, rows[:-1])

    with pytest.raises(LedgerError, match="cut from the end"):
        read_ledger(filled)
    with pytest.raises(LedgerError, match="cut from the end"):
        open_ledger(filled)


def test_missing_high_water_mark_is_rejected(filled: Path) -> None:
    filled.with_name(filled.name + ".head").unlink()

    with pytest.raises(LedgerError, match="high-water mark file is missing"):
        open_ledger(filled)


def test_torn_final_append_is_cut_off_with_a_warning(
    filled: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = filled.read_bytes()
    with filled.open("ab") as fh:  # an append killed half way: no newline, head not advanced
        fh.write(good.split(b"\n")[-2][:57])

    with caplog.at_level(logging.WARNING):
        contents = read_ledger(filled)  # readers ignore it and leave the file alone
    assert len(contents.entries) == 4
    assert contents.torn_bytes == 57
    assert filled.read_bytes() != good
    with caplog.at_level(logging.WARNING), open_ledger(filled) as ledger:
        assert filled.read_bytes() == good  # the writer cuts it off
        ledger.append([event(20, 3)])
    assert "torn final append" in caplog.text
    assert len(read_ledger(filled).entries) == 5


def test_stripping_the_newline_of_a_counted_line_is_not_a_torn_append(filled: Path) -> None:
    filled.write_bytes(filled.read_bytes()[:-1])

    with pytest.raises(LedgerError, match="cut from the end"):
        open_ledger(filled)


def test_complete_final_line_with_bad_hash_is_tampering(filled: Path) -> None:
    rows = lines(filled)
    rows[-1] = rows[-1].replace(b'"round":2', b'"round":7')
    write_lines(filled, rows)

    with pytest.raises(LedgerError, match="line 5: hash does not match"):
        open_ledger(filled)


def test_crash_between_ledger_fsync_and_head_update_is_accepted(filled: Path) -> None:
    head_file = filled.with_name(filled.name + ".head")
    old_head = head_file.read_bytes()
    with open_ledger(filled) as ledger:
        ledger.append([event(20, 3)])
    head_file.write_bytes(old_head)  # as if killed right after the ledger's fsync

    assert len(read_ledger(filled).entries) == 5
    with open_ledger(filled) as ledger:
        assert ledger.head.count == 6
    assert json.loads(head_file.read_text())["count"] == 6


def test_second_writer_is_refused_until_the_first_closes(path: Path) -> None:
    first = open_ledger(path)
    with pytest.raises(LedgerBusyError, match="another process"):
        open_ledger(path)
    first.close()

    with open_ledger(path) as second:
        assert second.head.count == 1


def test_genesis_parameters_are_fixed_for_life(filled: Path) -> None:
    for field, value in [
        ("delta", 1e-3),
        ("budget_epsilon", 80.0),
        ("budget_epsilon", None),
        ("accountant", "prv"),
        ("peer_id", "peer-9"),
        ("unit", "document"),
    ]:
        with pytest.raises(LedgerError, match=field):
            open_ledger(filled, **{field: value})


def test_the_genesis_names_the_privacy_unit_and_block_ledgers_are_unchanged(path: Path) -> None:
    with open_ledger(path) as ledger:
        assert ledger.genesis.unit == "block"
    assert b'"unit"' not in lines(path)[0]  # ledgers from before the unit verify as they were
    other = ledger_path(path.parent, "peer-1")
    with open_ledger(other, peer_id="peer-1", unit="subject") as ledger:
        ledger.append([event()])
    assert b'"unit":"subject"' in lines(other)[0]
    assert read_ledger(other).genesis.unit == "subject"
    with pytest.raises(PrivacyError, match="unit"):
        open_ledger(ledger_path(path.parent, "peer-2"), peer_id="peer-2", unit="paragraph")
    rows = lines(other)
    write_lines(other, [rows[0].replace(b'"subject"', b'"document"'), *rows[1:]])
    with pytest.raises(LedgerError, match="hash"):
        read_ledger(other)  # the unit is under the genesis hash


def test_missing_ledger_without_create_and_missing_ledger_with_records(path: Path) -> None:
    with pytest.raises(LedgerError, match="no such ledger"):
        open_ledger(path, create=False)
    with open_ledger(path) as ledger:
        ledger.append([event()])
    path.unlink()

    with pytest.raises(LedgerError, match="1 events were recorded"):
        open_ledger(path)


def test_crash_during_creation_leaves_a_recreatable_state(path: Path) -> None:
    with open_ledger(path):
        pass
    path.unlink()  # head says "genesis only": nothing was ever recorded

    with open_ledger(path) as ledger:
        assert ledger.entries == ()
    assert read_ledger(path).head.count == 1


def test_append_is_fsynced_before_it_returns(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append("fsync:" + os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1])
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        calls.append("replace:" + Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with open_ledger(path) as ledger:
        created = list(calls)
        calls.clear()
        ledger.append([event()])

    assert "fsync:ledgers" in created  # the directory, at creation
    assert calls[0] == f"fsync:{path.name}"  # the ledger first, then the high-water mark
    assert calls[1:] == [
        f"fsync:.{path.name}.head.tmp-{os.getpid()}",
        f"replace:{path.name}.head",
        "fsync:ledgers",
    ]


def test_failed_write_closes_the_ledger_and_reports(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = open_ledger(path)

    def broken(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", broken)
    with pytest.raises(LedgerError, match="append failed"):
        ledger.append([event()])
    monkeypatch.undo()

    assert ledger.closed
    with pytest.raises(LedgerError, match="closed"):
        ledger.append([event()])
    assert read_ledger(path).entries == ()


def test_epsilon_is_recomputed_from_the_recorded_events(filled: Path) -> None:
    contents = read_ledger(filled)
    expected = epsilon_spent(
        [event(80), DpEvent("gaussian-validation", 3.0, 1.0, 2, 1, "validation-scores")], DELTA
    )

    assert epsilon_spent(contents.events, contents.genesis.delta) == pytest.approx(expected)


def test_unsafe_peer_ids_are_refused(tmp_path: Path) -> None:
    for bad in ["../evil", "", "a/b", ".."]:
        with pytest.raises(PrivacyError, match="peer id"):
            ledger_path(tmp_path, bad)
    with pytest.raises(PrivacyError, match="peer id"):
        DpEvent("dp-sgd", 1.0, 0.1, 1, 0, "adapter", ("ok", "not ok"))
