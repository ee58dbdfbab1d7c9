"""Runtimes: what drives peers through warm-up and rounds, above the collaboration protocol.

* :mod:`.loopback` — every peer in one process on a staged loopback transport (simulations,
  benchmarks, audits): :class:`~secure_pcft.runtime.loopback.Simulation`.
* :mod:`.flower` — one Flower ClientApp per site and a blind relay ServerApp (deployments).

Both run the same per-peer steps (:mod:`secure_pcft.collab.round`).
"""
