"""Byte transports between peers: in-process loopback (tests, simulation); Flower (multi-machine)."""
