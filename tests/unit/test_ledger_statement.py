"""The ledger statement: per-event and running ε, timestamps, budget left, and the CLI's --json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secure_pcft.cli import main
from secure_pcft.privacy import DpEvent, PrivacyLedger, epsilon_spent, ledger_path, read_ledger
from secure_pcft.privacy.statement import ledger_statement

DELTA = 1e-4
EVENTS = [
    DpEvent("dp-sgd", 1.1, 0.02, 40, 0, "adapter", ("peer-1",)),
    DpEvent("dp-sgd", 1.1, 0.02, 0, 0, "signature", ("peer-1", "peer-2")),
    DpEvent("dp-sgd", 1.1, 0.02, 20, 1, "adapter", ("peer-2",)),
]


@pytest.fixture
def ledger_file(tmp_path: Path) -> Path:
    path = ledger_path(tmp_path, "peer-0")
    with PrivacyLedger.open(
        path, peer_id="peer-0", delta=DELTA, budget_epsilon=8.0, accountant="rdp"
    ) as ledger:
        for e in EVENTS:
            ledger.append([e])
    return path


def test_running_epsilon_is_the_composition_up_to_each_event(ledger_file: Path) -> None:
    rows = ledger_statement(read_ledger(ledger_file))

    assert [r.entry.seq for r in rows] == [1, 2, 3]
    for i, row in enumerate(rows):
        assert row.epsilon_running == pytest.approx(epsilon_spent(EVENTS[: i + 1], DELTA))
        assert row.epsilon_event == pytest.approx(epsilon_spent([EVENTS[i]], DELTA))
        assert row.budget_left == pytest.approx(8.0 - row.epsilon_running)
        assert row.entry.timestamp.startswith("20") and row.entry.timestamp.endswith("+00:00")
    assert rows[1].epsilon_event == 0.0  # post-processing adds nothing
    assert rows[1].epsilon_running == rows[0].epsilon_running
    assert rows[0].epsilon_running < rows[2].epsilon_running
    # the accountant composes tighter than adding the events' ε
    assert rows[2].epsilon_running < rows[0].epsilon_event + rows[2].epsilon_event


def test_cli_json_statement(ledger_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ledger", "--json", str(ledger_file)]) == 0
    out = json.loads(capsys.readouterr().out)

    assert out["format"] == "secure-pcft-ledger-statement/1"
    assert (out["peer_id"], out["delta"], out["budget_epsilon"]) == ("peer-0", DELTA, 8.0)
    assert out["chain_verified"] is True and out["unit"] == "block"
    assert [e["released"] for e in out["events"]] == ["adapter", "signature", "adapter"]
    assert out["events"][0]["recipients"] == ["peer-1"]
    assert out["epsilon_spent"] == pytest.approx(epsilon_spent(EVENTS, DELTA))
    assert out["events"][-1]["epsilon_running"] == out["epsilon_spent"]


def test_cli_table_shows_running_epsilon_and_times(
    ledger_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ledger", str(ledger_file)]) == 0
    out = capsys.readouterr().out

    assert "ε total" in out and "time (UTC)" in out and "ε per block" in out
    total = epsilon_spent(EVENTS, DELTA)
    assert f"{total:.4f}" in out.splitlines()[-2]  # the last event's running ε
    assert f"budget left {8.0 - total:.4f}" in out


def test_cli_json_on_a_tampered_ledger_exits_4(
    ledger_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = ledger_file.read_text().splitlines()
    lines[1] = lines[1].replace('"steps":40', '"steps":4', 1)
    ledger_file.write_text("\n".join(lines) + "\n")

    assert main(["ledger", "--json", str(ledger_file)]) == 4
    assert capsys.readouterr().out == ""
