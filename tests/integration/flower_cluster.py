"""A real Flower deployment on loopback for tests: one SuperLink, one site process per peer.

It follows docs/deploying.md: TLS with a consortium CA, SuperNode authentication with registered
public keys, ``secure-pcft flower site`` per peer (SuperNode in process isolation + ClientApp
host), and ``flwr run`` of the secure-pcft app. Certificates and keys are generated at test time.
Every process runs in its own process group and is killed on exit, pass or fail.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from secure_pcft.crypto.consortium import ROSTER_FILE, key_path, new_identity, write_roster
from secure_pcft.runtime.flower.deployment import (
    APP_DIR,
    Processes,
    TlsFiles,
    child_env,
    tool,
    wait_for,
    write_flwr_home,
    write_node_key,
    write_tls,
)
from tests.conftest import build_tiny_base, tiny_federation

CONNECTION = "consortium"


@pytest.fixture()
def flower_selected(request: pytest.FixtureRequest) -> None:
    """Run only when asked for: ``-m flower`` (CI's own step) or SECURE_PCFT_FLOWER_TESTS=1.

    These tests start a dozen processes for minutes; a plain ``-m "not slow"`` run skips them
    (with this reason) instead of loading a shared machine by surprise.
    """
    expr = str(request.config.getoption("markexpr") or "")
    selected = "flower" in expr and "not flower" not in expr
    if not (selected or os.environ.get("SECURE_PCFT_FLOWER_TESTS") == "1"):
        pytest.skip("multi-process Flower test: run with -m flower (own CI step)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def write_run(root: Path, *, privacy: bool = False, total_steps: int = 6) -> Path:
    """Tiny base with dropout on (base 0.1, LoRA 0.1: each peer draws its masks from its own
    stream in both runtimes, see docs/design.md), one text file per peer, pinned keys, the run TOML."""
    base = build_tiny_base(root / "base")
    cfg = json.loads((base / "config.json").read_text())
    for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
        cfg[k] = 0.1
    (base / "config.json").write_text(json.dumps(cfg))
    fed = tiny_federation()
    paths = []
    for p in fed.peers:
        f = root / "data" / f"{p.peer_id}.txt"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("\n".join(p.train + p.val + p.test) + "\n")
        paths.append(str(f))
    (root / "data" / "reference.txt").write_text("\n".join(fed.reference) + "\n")
    keys = root / "keys"
    for p in fed.peers:
        new_identity(p.peer_id, keys)
    write_roster(keys)
    dp = (
        "[privacy]\nenabled = true\nnoise_multiplier = 1.0\nmax_grad_norm = 1.0\n"
        if privacy
        else ""
    )
    run = root / "run.toml"
    run.write_text(
        f"""
[model]
base = "{base}"
[lora]
dropout = 0.1
[data]
source = "files"
paths = {json.dumps(paths)}
reference_path = "{root / "data" / "reference.txt"}"
reference_docs = 16
block_size = 16
[train]
batch_size = 4
lr = 5e-3
warmup_steps = 2
local_steps = 2
total_steps = {total_steps}
eval_batches = 2
# no [strategy] table: the toolkit's default collaboration (acceptance, kept model, reciprocal
# consent), which the deployment test holds equal to the loopback runtime
[security]
mode = "full"
key_dir = "{keys}"
{dp}
[output]
dir = "{root / "loopback"}"
save_adapters = false
"""
    )
    return run


@dataclass
class Cluster:
    """SuperLink + sites on loopback with TLS and SuperNode authentication."""

    root: Path
    run: Path
    peers: tuple[str, ...] = ("peer-0", "peer-1", "peer-2")
    procs: Processes = field(init=False)
    tls: TlsFiles = field(init=False)
    port: int = field(init=False)
    runtime_ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.procs = Processes(self.root / "logs")
        self.procs.env["FLWR_HOME"] = str(self.root / "flwr-home")
        self.procs.env["OMP_NUM_THREADS"] = "1"
        self.tls = write_tls(self.root / "tls", ("127.0.0.1",))
        self.port = free_port()
        write_flwr_home(
            self.root / "flwr-home", CONNECTION, f"127.0.0.1:{self.port}", self.tls.ca_cert
        )

    # ---- relay host ------------------------------------------------------------------------
    def start_superlink(self) -> None:
        self.procs.start(
            "superlink",
            [
                tool("flower-superlink"),
                "--ssl-ca-certfile", str(self.tls.ca_cert),
                "--ssl-certfile", str(self.tls.server_cert),
                "--ssl-keyfile", str(self.tls.server_key),
                "--enable-supernode-auth",
                "--host", "127.0.0.1",
                "--port", str(self.port),
                "--database", str(self.root / "superlink.db"),
            ],
        )  # fmt: skip
        wait_for(lambda: port_open(self.port), 60, "the SuperLink port")

    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tool("flwr"), *args],
            env=child_env(self.procs.env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    # ---- sites -----------------------------------------------------------------------------
    def prepare_site(self, peer: str) -> None:
        """The site's own directory: its peer key + the roster, and its SuperNode key."""
        site_keys = self.root / "sites" / peer / "keys"
        site_keys.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copy2(key_path(self.root / "keys", peer), key_path(site_keys, peer))
        shutil.copy2(self.root / "keys" / ROSTER_FILE, site_keys / ROSTER_FILE)
        _, public = write_node_key(self.root / "sites" / peer / "node", peer)
        res = self.flwr("supernode", "register", str(public), CONNECTION)
        assert res.returncode == 0, res.stdout + res.stderr
        self.runtime_ports[peer] = free_port()

    def start_site(self, peer: str) -> None:
        site = self.root / "sites" / peer
        self.procs.start(
            f"site-{peer}",
            [
                sys.executable, "-m", "secure_pcft.cli", "flower", "site",
                "--superlink", f"127.0.0.1:{self.port}",
                "--root-certificates", str(self.tls.ca_cert),
                "--auth-key", str(site / "node" / f"{peer}.node-key"),
                "--runtime-port", str(self.runtime_ports[peer]),
                "--site-dir", str(site),
                "--config", str(self.run),
                "--peer-id", peer,
                "--key-dir", str(site / "keys"),
            ],
        )  # fmt: skip

    # ---- runs ------------------------------------------------------------------------------
    def submit(self, results: Path, step_timeout: float = 120, wait: float = 120) -> None:
        res = self.flwr(
            "run", str(APP_DIR), CONNECTION, "--run-config",
            f'config="{self.run}" results="{results}" step-timeout={step_timeout} '
            f"wait-for-peers={wait}",
        )  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr

    def wait_results_complete(self, results: Path, rounds: int, timeout: float) -> dict[str, Any]:
        """Results once they hold round ``rounds`` (the relay rewrites them after every round)."""

        def done() -> bool:
            if not results.exists():
                return False
            data = json.loads(results.read_text())
            return any(r["round"] == rounds for r in data["rounds"])

        wait_for(done, timeout, f"round {rounds} in {results}", poll_s=1.0)
        value: dict[str, Any] = json.loads(results.read_text())
        return value

    def logs(self) -> str:
        """The end of every process log (``full_logs`` for a post-mortem)."""
        return "\n".join(f"==== {n}\n{self.procs.log(n)[-3000:]}" for n in sorted(
            p.stem for p in (self.root / "logs").glob("*.log")))  # fmt: skip

    def full_logs(self) -> str:
        """Every log of the cluster in full, the SuperNodes' own included (for a failing test's
        captured output: a flaky fault shows its whole timeline, not a truncated repr)."""
        files = sorted([*(self.root / "logs").glob("*.log"), *self.root.glob("sites/*/logs/*.log")])
        return "\n".join(f"==== {f.relative_to(self.root)}\n{f.read_text(errors='replace')}"
                         for f in files)  # fmt: skip

    def stop(self) -> None:
        self.procs.stop_all()


def started(cluster: Cluster) -> Cluster:
    cluster.start_superlink()
    for p in cluster.peers:
        cluster.prepare_site(p)
    for p in cluster.peers:
        cluster.start_site(p)
    return cluster
