"""The same ServerApp and ClientApp on Flower's simulation engine (Ray), for many peers on one host.

Each simulated SuperNode ``i`` is peer ``i`` of the run, with its site under
``<output>/sites/<peer-id>`` (state, ledger). The relay, the steps and the messages are those of a
deployment; only the transport underneath is Flower's in-memory one.

Peers keep their working state in the memory of the process that hosts their ClientApp (as a
deployed site does, see :mod:`.executor`). Ray's actor pool does not pin a node to an actor, so the
simulation runs **one** ClientApp actor (``client_resources.num_cpus`` = all of ``num_cpus``);
Ray itself, the relay and the actor are separate processes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.simulation import run_simulation

from secure_pcft.config import load_config
from secure_pcft.plugins import load_plugins
from secure_pcft.runtime.flower.client_app import make_client_app
from secure_pcft.runtime.flower.errors import DeploymentError
from secure_pcft.runtime.flower.server_app import make_server_app
from secure_pcft.runtime.flower.site import SiteSpec, run_peer_ids

log = logging.getLogger(__name__)


class _PartitionSites:
    """Simulated node → its site (picklable: Ray ships the ClientApp to its actor)."""

    def __init__(self, config: Path, peer_ids: tuple[str, ...], root: Path) -> None:
        self.config, self.peer_ids, self.root = config, peer_ids, root

    def __call__(self, context: Context) -> SiteSpec:
        i = int(context.node_config["partition-id"])
        peer = self.peer_ids[i]
        return SiteSpec(self.root / peer, self.config, peer, None)


def simulate(
    config: Path,
    output: Path,
    *,
    num_cpus: int = 2,
    object_store_mb: int = 128,
    step_timeout_s: float = 3600.0,
) -> dict[str, Any]:
    """Run ``config`` on the simulation engine; returns the results JSON (also written to
    ``<output>/results.json``).

    Raises:
        DeploymentError: the simulation ended without a results file.
    """
    config = Path(config).resolve()
    load_plugins(())  # installed plugins: a config may name what they register
    cfg = load_config(config)
    peer_ids = run_peer_ids(cfg, config)
    output = Path(output).resolve()
    results = output / "results.json"
    results.unlink(missing_ok=True)
    server = make_server_app(
        {
            "config": str(config),
            "results": str(results),
            "step-timeout": step_timeout_s,
            "wait-for-peers": 60,
        }
    )
    client = make_client_app(_PartitionSites(config, peer_ids, output / "sites"))
    backend: dict[str, Any] = {
        "client_resources": {"num_cpus": num_cpus, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": num_cpus,
            "num_gpus": 0,
            "object_store_memory": object_store_mb * 1024 * 1024,
            "include_dashboard": False,
        },
    }
    run_simulation(server, client, num_supernodes=len(peer_ids), backend_config=backend)
    if not results.exists():
        raise DeploymentError(f"simulation ended without {results}; see the log above")
    value: dict[str, Any] = json.loads(results.read_text())
    return value
