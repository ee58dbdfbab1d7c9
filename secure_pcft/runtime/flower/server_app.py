"""The ServerApp: a blind relay and scheduler (see :mod:`.relay`).

Run configuration (``flwr run ... --run-config``, or the app's ``[tool.flwr.app.config]``):

=================  =============================================================================
``config``         path of the consortium's run TOML on the relay host (same file as the sites')
``results``        where to write the results JSON (default ``runs/flower/results.json``)
``roster``         pinned ``roster.json`` (secure mode; default: ``[security] key_dir``/roster.json)
``step-timeout``   seconds a peer has per step before it is missing for the round (default 300)
``wait-for-peers`` seconds to wait at start for every peer to answer its hello (default 120)
``min-peers``      stop when fewer peers are live (default 2)
=================  =============================================================================
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from secure_pcft.config import load_config
from secure_pcft.crypto.consortium import ROSTER_FILE
from secure_pcft.crypto.roster import Roster
from secure_pcft.errors import ConfigError
from secure_pcft.plugins import load_plugins
from secure_pcft.runtime.flower.relay import Relay, RelaySettings, run_result, write_result
from secure_pcft.runtime.flower.site import run_peer_ids

log = logging.getLogger(__name__)


def _number(run_config: Mapping[str, Any], key: str, default: float) -> float:
    value = run_config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"run config {key}: a positive number of seconds/peers")
    return float(value)


def relay_main(grid: Grid, run_config: Mapping[str, Any]) -> Path:
    """Run the whole collaboration through ``grid``; returns the results path.

    Raises:
        ConfigError: missing or invalid run configuration.
    """
    config = run_config.get("config")
    if not isinstance(config, str) or not config:
        raise ConfigError("run config 'config': path of the run TOML")
    load_plugins(())  # installed plugins: a config may name what they register
    cfg = load_config(config)
    roster = None
    if cfg.security.mode == "full":
        roster_path = run_config.get("roster") or (
            str(Path(cfg.security.key_dir) / ROSTER_FILE) if cfg.security.key_dir else ""
        )
        if not roster_path:
            raise ConfigError("run config 'roster': secure mode needs the pinned roster.json")
        roster = Roster.load(str(roster_path))
    settings = RelaySettings(
        step_timeout_s=_number(run_config, "step-timeout", 300.0),
        wait_for_peers_s=_number(run_config, "wait-for-peers", 120.0),
        min_peers=int(_number(run_config, "min-peers", 2)),
    )
    start = time.perf_counter()
    out = Path(str(run_config.get("results", "runs/flower/results.json"))).expanduser()
    relay = Relay(grid, cfg, run_peer_ids(cfg, Path(config)), roster, settings)

    def write() -> None:  # after every round, so a killed relay loses no finished round
        write_result(run_result(relay, relay.log, time.perf_counter() - start), out)

    relay.on_round = write
    relay.run()
    write()
    log.info("relay: results written to %s", out)
    return out


def make_server_app(overrides: Mapping[str, Any] | None = None) -> ServerApp:
    """A ServerApp running :func:`relay_main`; ``overrides`` win over the run config (simulation)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        relay_main(grid, {**dict(context.run_config), **dict(overrides or {})})

    return app


app = make_server_app()
