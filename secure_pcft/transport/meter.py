"""The traffic meter: what peers handed to their transport, counted by their channels.

A channel records every wire message it hands over (its sender, recipient — ``"*"`` for a public
broadcast —, message type and size) under the meter's current *scope*: the round a driver began
(:meth:`TrafficMeter.begin_round`), or :data:`SESSION_SETUP` while traffic that happens once per
session (the public CKKS contexts) is sent inside :meth:`TrafficMeter.session_setup`. Results read
per-round and per-session figures from it; transports only move bytes.

One meter may serve every peer of a simulation, or one peer of a deployment (a Flower site).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from secure_pcft.errors import ConfigError

SESSION_SETUP = -1  # the scope of once-per-session traffic (HE contexts), apart from every round


@dataclass(frozen=True)
class Traffic:
    """A sum of wire messages: their count and their bytes (envelope bytes in secure mode)."""

    messages: int = 0
    bytes: int = 0


class TrafficMeter:
    """Counts wire messages per scope, sender, recipient and message type."""

    def __init__(self) -> None:
        self._round = 0
        self._setup_depth = 0
        # scope -> sender -> (recipient, msg_type) -> [messages, bytes]
        self._counts: defaultdict[int, defaultdict[str, dict[tuple[str, str], list[int]]]] = (
            defaultdict(lambda: defaultdict(dict))
        )

    @property
    def scope(self) -> int:
        """Where :meth:`record` counts now: the current round, or :data:`SESSION_SETUP`."""
        return SESSION_SETUP if self._setup_depth else self._round

    def begin_round(self, rnd: int) -> None:
        """Count what follows under round ``rnd`` (0: warm-up).

        Raises:
            ConfigError: ``rnd`` is not a non-negative integer.
        """
        if type(rnd) is not int or rnd < 0:
            raise ConfigError(f"round {rnd!r}: must be a non-negative integer")
        self._round = rnd

    @contextlib.contextmanager
    def session_setup(self) -> Iterator[None]:
        """Count what is sent inside under :data:`SESSION_SETUP` (nests; the round resumes after)."""
        self._setup_depth += 1
        try:
            yield
        finally:
            self._setup_depth -= 1

    def record(self, sender: str, recipient: str, msg_type: str, nbytes: int) -> None:
        """One wire message of ``nbytes`` handed to the transport."""
        cell = self._counts[self.scope][sender].setdefault((recipient, msg_type), [0, 0])
        cell[0] += 1
        cell[1] += nbytes

    def sent(
        self, scope: int | None = None, sender: str | None = None, msg_type: str | None = None
    ) -> Traffic:
        """What was sent, summed over everything the arguments left open (None: any)."""
        messages = nbytes = 0
        scopes: list[Mapping[str, dict[tuple[str, str], list[int]]]] = (
            list(self._counts.values()) if scope is None else [self._counts.get(scope, {})]
        )
        for by_sender in scopes:
            senders = list(by_sender.values()) if sender is None else [by_sender.get(sender, {})]
            for cells in senders:
                for (_, kind), (m, b) in cells.items():
                    if msg_type is None or kind == msg_type:
                        messages += m
                        nbytes += b
        return Traffic(messages, nbytes)

    def links(self, scope: int) -> dict[tuple[str, str], Traffic]:
        """Per (sender, recipient) link in ``scope``: what went over it (all types)."""
        out: dict[tuple[str, str], Traffic] = {}
        for sender, cells in self._counts.get(scope, {}).items():
            for (recipient, _), (m, b) in cells.items():
                t = out.get((sender, recipient), Traffic())
                out[(sender, recipient)] = Traffic(t.messages + m, t.bytes + b)
        return out

    def reset(self) -> None:
        """Forget everything (a new session on the same peers); the scope goes back to round 0."""
        self._counts.clear()
        self._round = 0
