"""Ledger properties: round trips, every mutation rejected, ε monotone in the events."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secure_pcft.errors import LedgerError
from secure_pcft.privacy import DpEvent, PrivacyLedger, epsilon_spent, ledger_path, read_ledger

DELTA = 1e-5
PEERS = st.sampled_from(["peer-1", "peer-2", "site.b", "n_3"])

sgd_events = st.builds(
    DpEvent,
    mechanism=st.just("dp-sgd"),
    noise_multiplier=st.floats(0.4, 6.0),
    # q kept small: Opacus's RDP for q near 1/2 takes seconds per evaluation.
    sample_rate=st.floats(1e-3, 0.2),
    steps=st.integers(0, 300),
    round=st.integers(0, 50),
    released=st.sampled_from(["adapter", "signature", "similarity"]),
    recipients=st.lists(PEERS, max_size=3, unique=True).map(tuple),
)
validation_events = st.builds(
    DpEvent,
    mechanism=st.just("gaussian-validation"),
    noise_multiplier=st.floats(0.5, 20.0),
    sample_rate=st.just(1.0),
    steps=st.integers(0, 8),
    round=st.integers(0, 50),
    released=st.just("validation-scores"),
    recipients=st.just(()),
)
events = st.one_of(sgd_events, validation_events)
# For the accountant: a peer keeps one (σ, q) per mechanism, so histories group into few entries;
# drawing from small sets keeps each example to a few Opacus evaluations.
accounted_events = st.one_of(
    st.builds(
        DpEvent,
        mechanism=st.just("dp-sgd"),
        noise_multiplier=st.sampled_from([0.5, 0.8, 1.0, 2.0, 4.0]),
        sample_rate=st.sampled_from([0.001, 0.01, 0.05]),
        steps=st.integers(0, 300),
        round=st.integers(0, 50),
        released=st.just("adapter"),
    ),
    validation_events,
)
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextmanager
def ledger_with(chunks: list[list[DpEvent]]) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        path = ledger_path(tmp, "peer-0")
        with PrivacyLedger.open(
            path, peer_id="peer-0", delta=DELTA, budget_epsilon=10.0, accountant="rdp"
        ) as ledger:
            for chunk in chunks:
                ledger.append(chunk)
        yield path


@FAST
@given(st.lists(st.lists(events, min_size=1, max_size=3), min_size=1, max_size=5))
def test_round_trip_in_any_chunking(chunks: list[list[DpEvent]]) -> None:
    with ledger_with(chunks) as path:
        contents = read_ledger(path)

    assert list(contents.events) == [e for chunk in chunks for e in chunk]
    assert [e.seq for e in contents.entries] == list(range(1, len(contents.entries) + 1))


@FAST
@given(
    st.lists(events, min_size=1, max_size=4),
    st.data(),
)
def test_any_single_byte_change_is_rejected(evs: list[DpEvent], data: st.DataObject) -> None:
    with ledger_with([evs]) as path:
        target = data.draw(st.sampled_from([path, path.with_name(path.name + ".head")]))
        raw = bytearray(target.read_bytes())
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[pos]))
        target.write_bytes(bytes(raw))

        with pytest.raises(LedgerError):
            read_ledger(path)


@FAST
@given(st.lists(events, min_size=1, max_size=4), st.data())
def test_any_truncation_is_rejected(evs: list[DpEvent], data: st.DataObject) -> None:
    with ledger_with([evs]) as path:
        raw = path.read_bytes()
        path.write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1))])

        with pytest.raises(LedgerError):
            PrivacyLedger.open(
                path, peer_id="peer-0", delta=DELTA, budget_epsilon=10.0, accountant="rdp"
            )


@FAST
@given(st.lists(events, min_size=2, max_size=5), st.data())
def test_deleting_or_swapping_lines_is_rejected(evs: list[DpEvent], data: st.DataObject) -> None:
    with ledger_with([evs]) as path:
        rows = path.read_bytes().split(b"\n")[:-1]
        i = data.draw(st.integers(1, len(rows) - 1))
        j = data.draw(st.integers(1, len(rows) - 1).filter(lambda k: k != i))
        if data.draw(st.booleans()):
            rows[i], rows[j] = rows[j], rows[i]
        else:
            del rows[i]
        path.write_bytes(b"".join(r + b"\n" for r in rows))

        with pytest.raises(LedgerError):
            read_ledger(path)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(accounted_events, max_size=6),
    st.lists(accounted_events, min_size=1, max_size=3),
    st.sampled_from(["rdp", "gdp"]),
)
def test_epsilon_never_decreases_when_events_are_added(
    before: list[DpEvent], added: list[DpEvent], accountant: str
) -> None:
    eps_before = epsilon_spent(before, DELTA, accountant)
    eps_after = epsilon_spent([*before, *added], DELTA, accountant)

    assert eps_after >= eps_before * (1 - 1e-12)
    if any(e.steps > 0 for e in added):
        assert eps_after > 0
