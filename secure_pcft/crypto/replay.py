"""The receiver's replay window: timestamps within the clock skew, each sequence number once.

The rule (TM-03, TM-04):

* **At the door**, before any state changes, an envelope's timestamp must lie in
  ``[floor, now + max_skew]``, where ``floor = max(now - max_skew)`` over every clock reading so far
  (it never goes down, even if the local clock is stepped back).
* **Replays**: every sequence number accepted from a sender is remembered together with its
  timestamp until that timestamp falls below the floor; an envelope whose sequence number is
  remembered is refused. Once forgotten, the same envelope is refused at the door (its timestamp is
  below the floor, and the floor never goes down), so each envelope opens at most once per receiver
  lifetime.
* **Nothing a message says moves a watermark.** There is no per-sender "latest" sequence number or
  timestamp: the only monotone state is the floor, derived from the local clock alone. A message
  stamped ahead of the local clock (refused beyond the skew, or accepted within it) therefore
  cannot make the sender's later, normally stamped messages look old; envelopes that arrive out
  of order inside the window are each accepted once.
* **The receiver's own clock cannot step back or forward the window.** Ages are measured with
  :class:`AnchoredClock`: the wall clock read once when the inbox is built, plus the *monotonic*
  time elapsed since. A receiver whose system clock is stepped forward 1,000 s and back (NTP, an
  operator) would otherwise raise the floor by 1,000 s and refuse honest senders for ~700 s; an
  anchored clock never saw the step.
* Memory is bounded: at most :data:`MAX_REMEMBERED_PER_SENDER` sequence numbers per sender are
  kept (a sender's timestamps are at most ``2 * max_skew`` apart); a sender that floods past it is
  refused until its oldest entries leave the window — its own link only, never another peer's.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

from secure_pcft.errors import ReplayError, StaleTimestampError

# About 109 messages/s sustained over a 600 s window; a round sends a handful per pair.
MAX_REMEMBERED_PER_SENDER = 65_536


class ReplayWindow:
    """Per-receiver replay state. Not thread-safe (one per :class:`~.envelope.Inbox`).

    Args:
        max_skew_s: accepted distance between a sender's timestamp and the local clock, seconds.
        max_per_sender: how many sequence numbers to remember per sender at most.
    """

    def __init__(self, max_skew_s: float, max_per_sender: int = MAX_REMEMBERED_PER_SENDER) -> None:
        self._skew_ms = max_skew_s * 1000.0
        self._max_per_sender = max_per_sender
        self._floor_ms = float("-inf")
        self._seen: dict[str, set[int]] = {}
        self._expiry: dict[str, list[tuple[int, int]]] = {}  # min-heap of (ts_ms, seq)

    def check_timestamp(self, ts_ms: int, now_s: float) -> None:
        """Refuse a timestamp outside ``[floor, now + max_skew]``; only the floor (local clock) moves.

        Raises:
            StaleTimestampError: too old, or further in the future than the skew allows.
        """
        now_ms = now_s * 1000.0
        self._floor_ms = max(self._floor_ms, now_ms - self._skew_ms)
        limit = f"(limit {self._skew_ms / 1000.0:.0f} s)"
        if ts_ms > now_ms + self._skew_ms:
            raise StaleTimestampError(
                f"timestamp {(ts_ms - now_ms) / 1000:.0f} s in the future {limit}"
            )
        if ts_ms < self._floor_ms:
            raise StaleTimestampError(
                f"timestamp {(now_ms - ts_ms) / 1000:.0f} s in the past {limit}"
            )

    def check_unseen(self, sender: str, seq: int) -> None:
        """Refuse a sequence number already accepted from ``sender`` inside the window.

        Raises:
            ReplayError: seen before, or the sender's window memory is full.
        """
        self._forget_old(sender)
        seen = self._seen.get(sender, set())
        if seq in seen:
            raise ReplayError(f"sequence {seq} already accepted (replay)")
        if len(seen) >= self._max_per_sender:
            raise ReplayError(
                f"more than {self._max_per_sender} messages inside the window; try later"
            )

    def remember(self, sender: str, seq: int, ts_ms: int) -> None:
        """Record an accepted message (call only after every other check has passed)."""
        self._seen.setdefault(sender, set()).add(seq)
        heapq.heappush(self._expiry.setdefault(sender, []), (ts_ms, seq))

    def remembered(self, sender: str) -> int:
        """How many sequence numbers from ``sender`` are held now."""
        return len(self._seen.get(sender, ()))

    def _forget_old(self, sender: str) -> None:
        # Safe to forget: a timestamp below the floor is refused at the door from now on.
        heap = self._expiry.get(sender)
        while heap and heap[0][0] < self._floor_ms:
            _, seq = heapq.heappop(heap)
            self._seen[sender].discard(seq)


class AnchoredClock:
    """Seconds since the epoch that never step: the wall clock at construction plus the monotonic
    time elapsed since (the receiver's ``now`` for the replay window).

    Args:
        wall: the wall clock (seconds since the epoch), read once.
        monotonic: a clock that never goes back (seconds), read at every call.
    """

    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._monotonic = monotonic
        self._wall0 = wall()
        self._mono0 = monotonic()

    def __call__(self) -> float:
        return self._wall0 + (self._monotonic() - self._mono0)
