"""Flower runtime: a blind relay ServerApp, one ClientApp per peer, and the tools to deploy them.

Modules, one concept each:

* :mod:`.mailbox` — the peer's :class:`~secure_pcft.transport.base.Transport` on a relay;
* :mod:`.records` — step requests and replies as Flower records (opaque envelope bytes);
* :mod:`.steps` — the round's phases split into per-peer steps (same peer/protocol code);
* :mod:`.state_codec`, :mod:`.site_state` — a site's durable peer state (safetensors + JSON);
* :mod:`.site` — a site's peer: build it, run a step, save at round boundaries;
* :mod:`.hello` — the signed hello that binds a peer id to a Flower node id;
* :mod:`.client_app`, :mod:`.server_app` — the Flower apps;
* :mod:`.executor` — a long-lived ClientApp host for SuperNodes in ``process`` isolation;
* :mod:`.deployment` — certificates, node keys and processes for a SuperLink and SuperNodes;
* :mod:`.simulation` — the same apps on Flower's simulation engine (Ray).

Importing this package does not import ``flwr``; the app modules do (extra ``flower``).
"""
