"""The traffic meter: scopes (rounds, session setup), filters, links and reset."""

from __future__ import annotations

import pytest

from secure_pcft.errors import ConfigError
from secure_pcft.transport.meter import SESSION_SETUP, Traffic, TrafficMeter


def test_counts_under_the_current_round_and_apart_for_session_setup() -> None:
    meter = TrafficMeter()
    meter.record("a", "b", "adapter", 100)  # warm-up scope: round 0
    meter.begin_round(2)
    meter.record("a", "b", "adapter", 10)
    meter.record("a", "c", "adapter", 20)
    with meter.session_setup():
        assert meter.scope == SESSION_SETUP
        with meter.session_setup():  # nests
            meter.record("a", "*", "he-context", 5)
        meter.record("b", "*", "he-context", 7)
    assert meter.scope == 2  # the round resumes after the setup scope
    meter.record("b", "a", "decline", 1)

    assert meter.sent(0) == Traffic(1, 100)
    assert meter.sent(2, "a") == Traffic(2, 30)
    assert meter.sent(2, "b") == Traffic(1, 1)
    assert meter.sent(SESSION_SETUP) == Traffic(2, 12)
    assert meter.sent(msg_type="he-context") == Traffic(2, 12)
    assert meter.sent(sender="a") == Traffic(4, 135)
    assert meter.sent(7) == Traffic() and meter.sent(2, "z") == Traffic()
    assert meter.links(2) == {("a", "b"): Traffic(1, 10), ("a", "c"): Traffic(1, 20),
                              ("b", "a"): Traffic(1, 1)}  # fmt: skip
    assert meter.links(SESSION_SETUP) == {("a", "*"): Traffic(1, 5), ("b", "*"): Traffic(1, 7)}


def test_reset_forgets_everything_and_rounds_are_validated() -> None:
    meter = TrafficMeter()
    meter.begin_round(3)
    meter.record("a", "b", "adapter", 10)
    meter.reset()
    assert meter.sent() == Traffic() and meter.scope == 0
    for bad in (-1, 1.5, "2"):
        with pytest.raises(ConfigError):
            meter.begin_round(bad)  # type: ignore[arg-type]
