"""Faults on a real deployment (SuperLink + 3 sites as processes, TLS, SuperNode auth, DP on):

1. a peer drops out mid-round (its site's process group is SIGKILLed right after its first
   release of round 1): round 1 completes for the other two and lists it as missing;
2. that peer restarts from its saved state (end of the warm-up): it is missing until the SuperLink
   lets its node in again (its old session must expire first), then it takes part again;
3. the relay restarts: the SuperLink (with its ServerApp) is SIGKILLed in the round after, and
   started again on the same database; a new ``flwr run`` resumes after the last started round
   (that round is abandoned, never re-run) and completes the run.

Then every peer's ledger verifies, records no release twice, and records no DP-SGD step twice:
per peer, the steps in the ledger are at most the steps actually trained (warm-up + local steps of
each round it trained in). An unregistered SuperNode is refused by the SuperLink."""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from secure_pcft.crypto.consortium import ROSTER_FILE
from secure_pcft.crypto.ledger_heads import verify_head
from secure_pcft.crypto.roster import Roster
from secure_pcft.privacy.ledger import read_ledger
from secure_pcft.runtime.flower.deployment import (
    SiteLaunch,
    child_env,
    supernode_argv,
    wait_for,
    write_node_key,
)
from secure_pcft.runtime.flower.site import SiteSpec
from tests.integration.flower_cluster import (  # noqa: F401  (fixture)
    Cluster,
    flower_selected,
    port_open,
    started,
    write_run,
)

pytestmark = [pytest.mark.flower, pytest.mark.usefixtures("flower_selected")]

WARMUP, LOCAL, ROUNDS = 2, 2, 6  # write_run's schedule; rounds of the faults run


def _started_round(root: Path, peer: str) -> int:
    path = root / "sites" / peer / "state" / "started.json"
    try:
        return int(json.loads(path.read_text())["round"])
    except (OSError, ValueError, KeyError):
        return 0


def _ledger(root: Path, peer: str) -> Path:
    return root / "sites" / peer / "ledgers" / f"{peer}.ledger.jsonl"


def _released_in(root: Path, peer: str, rnd: int) -> bool:
    path = _ledger(root, peer)
    return path.exists() and any(e.round == rnd for e in read_ledger(path).events)


def _rejoined_round(results: Path) -> int | None:
    """First round after round 1 in which peer-2 took part again (None: not yet)."""
    try:
        rounds = json.loads(results.read_text())["rounds"]
    except (OSError, ValueError, KeyError):
        return None
    back = [r["round"] for r in rounds if r["round"] > 1 and r["test_ppl"][2] is not None]
    return min(back) if back else None


def test_dropout_peer_restart_and_relay_restart(tmp_path: Path) -> None:
    run = write_run(tmp_path, privacy=True, total_steps=WARMUP + ROUNDS * LOCAL)
    cluster = Cluster(tmp_path, run)
    first, second = tmp_path / "run1.json", tmp_path / "run2.json"
    try:
        started(cluster)
        cluster.submit(first, step_timeout=45, wait=120)
        # 1. peer-2 dies mid-round 1, right after its first release (its similarity answers) ...
        wait_for(lambda: _released_in(tmp_path, "peer-2", 1), 300, "peer-2's round-1 release", 0.2)
        cluster.procs.stop("site-peer-2", sig=signal.SIGKILL)
        # 2. ... and restarts from its saved state; it rejoins once its old node session expired
        cluster.start_site("peer-2")
        wait_for(lambda: _rejoined_round(first) is not None, 420, "peer-2 back", 1.0)
        back = _rejoined_round(first)
        assert back is not None and back + 2 <= ROUNDS, "peer-2 came back too late"
        # 3. the relay dies in the round after, and comes back on the same database
        wait_for(lambda: _started_round(tmp_path, "peer-0") >= back + 1, 300, "next round", 0.2)
        cluster.procs.stop("superlink", sig=signal.SIGKILL)
        run1 = json.loads(first.read_text())
        cluster.start_superlink()
        _assert_unregistered_node_refused(cluster)
        cluster.submit(second, step_timeout=45, wait=120)
        run2 = cluster.wait_results_complete(second, rounds=ROUNDS, timeout=420)
    except BaseException:
        print(cluster.full_logs())
        raise
    finally:
        cluster.stop()
    try:
        _check_runs(tmp_path, cluster, run1, run2, back)
    except AssertionError:
        print(cluster.full_logs())  # pytest shows a failing test's output whole
        raise


def _check_runs(
    tmp_path: Path, cluster: Cluster, run1: dict[str, Any], run2: dict[str, Any], back: int
) -> None:
    missing1 = {r["round"]: r["extra"]["missing_peers"] for r in run1["rounds"]}
    assert missing1[0] == []
    assert all(missing1[r] == ["peer-2"] for r in range(1, back)), missing1
    assert missing1[back] == []
    r1 = run1["rounds"][1]
    assert r1["test_ppl"][2] is None and all(v is not None for v in r1["test_ppl"][:2])
    assert r1["trust"][0][2] == 0.0 and r1["trust"][1][2] == 0.0  # nothing of peer-2 aggregated
    rb = next(r for r in run1["rounds"] if r["round"] == back)
    assert rb["trust"][0][2] > 0.0 and rb["trust"][2][0] > 0.0  # peer-2 is back in the exchange
    abandoned = back + 1
    assert [r["round"] for r in run2["rounds"]] == list(range(abandoned + 1, ROUNDS + 1))
    missing2 = {r["round"]: r["extra"]["missing_peers"] for r in run2["rounds"]}
    assert all(not m for m in missing2.values()), missing2
    assert run2["extra"]["abandoned_rounds"] == [abandoned]

    present = {
        p: {r["round"] for r in [*run1["rounds"], *run2["rounds"]]
            if r["round"] > 0 and p not in r["extra"]["missing_peers"]}
        for p in cluster.peers
    }  # fmt: skip
    for peer in cluster.peers:
        events = read_ledger(_ledger(tmp_path, peer)).events
        releases = Counter((e.round, e.released, e.recipients) for e in events)
        assert max(releases.values()) == 1, f"{peer}: a release recorded twice"
        # Rounds in which the peer trained: those it completed, the abandoned one, and for peer-2
        # round 1 (it died after releasing). Each trained DP-SGD step may be recorded once: the
        # warm-up steps peer-2 restored from its saved state were already in its round-1 release.
        trained = present[peer] | {abandoned} | ({1} if peer == "peer-2" else set())
        steps = sum(e.steps for e in events if e.mechanism == "dp-sgd")
        assert steps <= WARMUP + LOCAL * len(trained), f"{peer}: DP-SGD steps counted twice"
        assert {e.round for e in events} >= present[peer]
    # Every adapter released carried its sender's signed ledger head; the relay collected the
    # receipts the sites kept; each verifies against the pinned key and the sender's ledger.
    roster = Roster.load(tmp_path / "keys" / ROSTER_FILE)
    receipts = [r["head"] for run in (run1, run2) for rs in run["extra"]["receipts"].values()
                for r in rs]  # fmt: skip
    assert receipts
    for head in receipts:
        st = verify_head(head, roster.get(head["peer"]).sign_pk)
        contents = read_ledger(_ledger(tmp_path, st.peer))
        hashes = [contents.genesis.hash, *(e.hash for e in contents.entries)]
        assert hashes[st.count - 1] == st.hash


def _assert_unregistered_node_refused(cluster: Cluster) -> None:
    """A SuperNode whose key was never registered gets no node id from the SuperLink."""
    rogue_dir = cluster.root / "rogue"
    private, _ = write_node_key(rogue_dir, "rogue")
    launch = SiteLaunch(f"127.0.0.1:{cluster.port}", 0, cluster.tls.ca_cert, private)
    spec = SiteSpec(rogue_dir, cluster.run, "peer-0", None)
    argv = supernode_argv(launch, spec)
    argv[argv.index("--port") + 1] = "0"
    argv += ["--max-retries", "2", "--max-wait-time", "15"]
    res = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=child_env(cluster.procs.env),
    )
    out = res.stdout + res.stderr
    assert "SuperNode ID" not in out, out[-2000:]
    assert res.returncode != 0
    assert port_open(cluster.port)
    legit = (cluster.root / "sites" / "peer-0" / "logs" / "supernode-peer-0.log").read_text()
    assert "SuperNode ID" in legit  # the same log line does appear for a registered node
