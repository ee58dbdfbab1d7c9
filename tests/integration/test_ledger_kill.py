"""SIGKILL at random moments never loses a release: after every restart the ledger verifies and
its ε is at least the ε of the releases that visibly happened (the marker file).

A real process does "record the release (append + fsync), then release"; it is killed with SIGKILL
at random moments — while opening/verifying the ledger, between the fsync and the high-water mark,
between the record and the release — and restarted. The fast test forks each worker from an
already-imported server (a fresh process that reopens the ledger from disk, without paying the
interpreter and torch start-up); the slow one also restarts whole interpreters.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import IO

import pytest

from secure_pcft.privacy import epsilon_spent, read_ledger

WORKER_PATH = Path(__file__).with_name("ledger_kill_worker.py")
REPO = Path(__file__).resolve().parents[2]
KILLED = -signal.SIGKILL


def load_worker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ledger_kill_worker", WORKER_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker = load_worker()


def spawn(
    mode: str, ledger: Path, marker: Path, budget: float, stderr: IO[str]
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, str(WORKER_PATH), mode, str(ledger), str(marker), str(budget)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=REPO,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", "worker failed to start (see its stderr)"
    return proc


def verify(ledger: Path, marker: Path) -> tuple[int, float, float]:
    """Assert the ledger covers every marker; return (events, ε of ledger, ε of releases)."""
    raw = marker.read_bytes() if marker.exists() else b""
    if not ledger.exists():
        # Killed while creating the ledger (the first kill can come within milliseconds): the head
        # is written first, so at most a head of count 1 (genesis only) may exist, and nothing
        # may have been released.
        head = ledger.with_name(ledger.name + ".head")
        assert not head.exists() or json.loads(head.read_bytes())["count"] == 1
        assert raw == b"", "a release happened without a ledger"
        return 0, 0.0, 0.0
    contents = read_ledger(ledger)  # raises LedgerError if anything is off
    *complete, torn = raw.split(b"\n")
    released = []
    for line in complete:
        k_text, digest = line.split()
        k = int(k_text)
        assert contents.entries[k].hash == digest.decode(), f"release {k} is not the ledger's entry"
        released.append(k)
    assert released == sorted(set(released))
    # A torn marker line is a release that started: the ledger must hold one more entry.
    assert len(contents.entries) >= len(released) + (1 if torn else 0)
    eps_ledger = epsilon_spent(contents.events, worker.DELTA)
    eps_released = epsilon_spent([worker.event_for(k) for k in released], worker.DELTA)
    assert eps_ledger >= eps_released, f"ledger ε {eps_ledger} < released ε {eps_released}"
    return len(contents.entries), eps_ledger, eps_released


def kill_soon(pid: int, rng: random.Random, max_delay: float) -> None:
    time.sleep(rng.uniform(0.0, max_delay))
    with contextlib.suppress(ProcessLookupError):  # it stopped on its own (budget exhausted)
        os.kill(pid, signal.SIGKILL)


def forked_kills(
    tmp_path: Path, kills: int, budget: float, seed: int, max_delay: float = 0.25
) -> list[tuple[int, int, float, float]]:
    ledger, marker = tmp_path / "peer-0.ledger.jsonl", tmp_path / "released.txt"
    rng = random.Random(seed)
    history = []
    with (tmp_path / "worker.err").open("w") as err:
        server = spawn("serve", ledger, marker, budget, err)
        assert server.stdin is not None and server.stdout is not None
        try:
            for _ in range(kills):
                server.stdin.write("go\n")
                server.stdin.flush()
                pid = int(server.stdout.readline().split()[1])
                kill_soon(pid, rng, max_delay=max_delay)
                status = int(server.stdout.readline().split()[1])
                assert status in (KILLED, worker.EXHAUSTED), (tmp_path / "worker.err").read_text()
                history.append((status, *verify(ledger, marker)))
        finally:
            server.stdin.close()
            server.wait(timeout=30)
    return history


def test_sigkill_at_random_moments_never_loses_a_release(tmp_path: Path) -> None:
    history = forked_kills(tmp_path, kills=25, budget=1000.0, seed=20240401)

    statuses = [h[0] for h in history]
    counts = [h[1] for h in history]
    assert statuses.count(KILLED) == 25
    assert counts == sorted(counts) and counts[-1] > 25  # it kept making progress across kills
    assert all(eps_ledger >= eps_released for _, _, eps_ledger, eps_released in history)


def test_kills_while_the_ledger_is_being_created_leave_no_release(tmp_path: Path) -> None:
    """Kills within milliseconds of start land in ledger creation (head written, genesis not yet
    renamed into place): a state that must never come with a release (CI once hit it by chance)."""
    history = forked_kills(tmp_path, kills=5, budget=1000.0, seed=1, max_delay=0.004)
    assert [h[0] for h in history] == [KILLED] * 5


@pytest.fixture
def slow_selected(request: pytest.FixtureRequest) -> None:
    if "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("slow: run with -m slow")


@pytest.mark.slow
@pytest.mark.usefixtures("slow_selected")
def test_many_kills_up_to_budget_exhaustion(tmp_path: Path) -> None:
    history = forked_kills(tmp_path, kills=150, budget=1.4, seed=7)

    statuses, counts = [h[0] for h in history], [h[1] for h in history]
    first = statuses.index(worker.EXHAUSTED)  # the budget ran out ...
    assert statuses[:first].count(KILLED) > 20
    assert len(set(counts[first:])) == 1  # ... and stays out: nothing recorded after that
    final_eps, released_eps = history[-1][2], history[-1][3]
    assert released_eps <= final_eps <= 1.4


@pytest.mark.slow
@pytest.mark.usefixtures("slow_selected")
def test_kills_of_fresh_interpreters(tmp_path: Path) -> None:
    ledger, marker = tmp_path / "peer-0.ledger.jsonl", tmp_path / "released.txt"
    rng = random.Random(11)
    with (tmp_path / "worker.err").open("w") as err:
        for _ in range(4):
            proc = spawn("run", ledger, marker, 1000.0, err)
            kill_soon(proc.pid, rng, max_delay=0.5)
            assert proc.wait(timeout=30) == KILLED
            verify(ledger, marker)
    assert len(read_ledger(ledger).entries) > 0
