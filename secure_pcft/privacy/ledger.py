"""The durable per-peer privacy ledger: an append-only, hash-chained JSON-lines file.

It is what keeps the ε bound on what recipients learn (TM-01 curious peer, TM-05 colluding peers)
true across crashes and restarts: spent ε is never forgotten.

Files, for a ledger ``<dir>/<peer>.ledger.jsonl``:

- ``<peer>.ledger.jsonl``: line 1 the genesis record, then one :class:`LedgerEntry` per line,
  each canonical JSON with a SHA-256 ``hash`` over its content and its predecessor's hash.
- ``<peer>.ledger.jsonl.head``: the high-water mark ``{"count", "hash"}`` of the last *completed*
  append, replaced atomically after each append. It lets a reader detect whole lines cut from the
  end of the ledger, which a hash chain alone cannot.
- ``<peer>.ledger.jsonl.lock``: held with ``flock`` by the one writer.

Durability order of an append: write the lines, ``fsync`` the ledger, then replace and ``fsync``
the head; only then does :meth:`PrivacyLedger.append` return and may the caller release anything.
Hence after a crash the ledger holds at least every release that happened:

- a final line without its newline is an append that never returned (nothing was released): it is
  cut off with a warning, provided the head does not count it;
- a complete line whose hash, sequence or chain link is wrong is tampering or corruption:
  :class:`LedgerError`, never repaired;
- fewer lines than the head counts, or a head that names another hash: :class:`LedgerError`.

Limitations (also in SECURITY.md): the chain and the head are keyless, so someone who can write the
peer's files can rewrite both consistently (or delete the three files and start over). They catch
corruption, torn writes, careless edits and partial restores, not a malicious administrator; for
that, anchor :attr:`PrivacyLedger.head` outside the peer (e.g. in the signed envelopes it sends).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from secure_pcft import bounded_json
from secure_pcft.errors import LedgerBusyError, LedgerError
from secure_pcft.fileio import fsync_path
from secure_pcft.privacy.events import (
    LEDGER_FORMAT,
    DpEvent,
    Genesis,
    LedgerEntry,
    canonical,
    check_peer_id,
    encode_line,
    parse_entry,
    parse_genesis,
    seal_entry,
    seal_genesis,
)

log = logging.getLogger(__name__)
# The high-water mark is one flat object of three fields.
_HEAD_LIMITS = bounded_json.JsonLimits(max_bytes=4096, max_depth=1)


def ledger_path(ledger_dir: str | Path, peer_id: str) -> Path:
    """The ledger file of ``peer_id`` under ``ledger_dir``: ``<dir>/<peer_id>.ledger.jsonl``."""
    return Path(ledger_dir) / f"{check_peer_id(peer_id)}.ledger.jsonl"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class LedgerHead:
    """High-water mark: records in the ledger (genesis included) and the hash of the last one."""

    count: int
    hash: str


@dataclass(frozen=True)
class LedgerContents:
    """A verified ledger: genesis, entries in order, and bytes of an ignored torn final append."""

    genesis: Genesis
    entries: tuple[LedgerEntry, ...]
    torn_bytes: int = 0

    @property
    def events(self) -> tuple[DpEvent, ...]:
        return tuple(e.event for e in self.entries)

    @property
    def head(self) -> LedgerHead:
        last = self.entries[-1].hash if self.entries else self.genesis.hash
        return LedgerHead(len(self.entries) + 1, last)


# ----------------------------------------------------------------------------- files


def _head_path(path: Path) -> Path:
    return path.with_name(path.name + ".head")


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a fsync'd temporary file, rename, and fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_path(path.parent)


def _read_head(path: Path) -> LedgerHead | None:
    hp = _head_path(path)
    try:
        raw = hp.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LedgerError(f"{hp.name}: unreadable high-water mark ({exc.strerror})") from None
    if not raw.isascii():
        raise LedgerError(f"{hp.name}: unreadable high-water mark (not ASCII)")
    obj = bounded_json.loads(raw, _HEAD_LIMITS, LedgerError, f"{hp.name}: high-water mark")
    if (
        not isinstance(obj, dict)
        or obj.get("format") != LEDGER_FORMAT
        or not isinstance(obj.get("count"), int)
        or obj["count"] < 1
        or not isinstance(obj.get("hash"), str)
    ):
        raise LedgerError(f"{hp.name}: malformed high-water mark")
    return LedgerHead(obj["count"], obj["hash"])


def _write_head(path: Path, head: LedgerHead) -> None:
    body = {"format": LEDGER_FORMAT, "count": head.count, "hash": head.hash}
    _atomic_write(_head_path(path), canonical(body) + b"\n")


def _parse(data: bytes, name: str) -> LedgerContents:
    """Verify the whole chain; a final fragment without newline is reported as torn, not parsed."""
    *lines, tail = data.split(b"\n")
    if not lines:
        raise LedgerError(f"{name}: no complete genesis record")
    genesis = parse_genesis(lines[0])
    entries: list[LedgerEntry] = []
    prev = genesis.hash
    for i, line in enumerate(lines[1:], start=1):
        entry = parse_entry(line, i + 1, i, prev)
        entries.append(entry)
        prev = entry.hash
    return LedgerContents(genesis, tuple(entries), len(tail))


def _cross_check(contents: LedgerContents, head: LedgerHead, name: str) -> None:
    n = len(contents.entries) + 1
    if head.count > n:
        raise LedgerError(
            f"{name}: {n} complete records but the high-water mark says {head.count} "
            "(records were cut from the end)"
        )
    at = contents.genesis.hash if head.count == 1 else contents.entries[head.count - 2].hash
    if at != head.hash:
        raise LedgerError(f"{name}: record {head.count} differs from the high-water mark")


def read_ledger(path: str | Path) -> LedgerContents:
    """Read and verify a ledger without taking the writer lock (reports, audits, tests).

    A torn final append (an append that never completed, so nothing was released) is ignored with
    a warning; the file is not modified.

    Raises:
        LedgerError: missing files, any edited, reordered, deleted or forged record, records cut
            from the end, or a malformed high-water mark.
    """
    p = Path(path)
    # Head first: a writer appending meanwhile only makes the ledger longer than the head says.
    head = _read_head(p)
    try:
        data = p.read_bytes()
    except FileNotFoundError as exc:
        raise LedgerError(f"{p.name}: no such ledger") from exc
    if head is None:
        raise LedgerError(f"{p.name}: high-water mark file is missing")
    contents = _parse(data, p.name)
    _cross_check(contents, head, p.name)
    if contents.torn_bytes:
        log.warning("%s: ignoring a torn final append of %d bytes", p.name, contents.torn_bytes)
    return contents


# ----------------------------------------------------------------------------- the writer


class PrivacyLedger:
    """The one writer of a peer's ledger. Open with :meth:`open`; use as a context manager.

    Attributes:
        path: the ledger file.
        genesis: its verified genesis record.
    """

    def __init__(self, path: Path, lock_fd: int, contents: LedgerContents) -> None:
        self.path = path
        self.genesis = contents.genesis
        self._lock_fd: int | None = lock_fd
        self._entries = list(contents.entries)
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND)

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        peer_id: str,
        delta: float,
        budget_epsilon: float | None,
        accountant: str,
        create: bool = True,
        unit: str = "block",
    ) -> PrivacyLedger:
        """Lock, verify (and repair a torn final append of) the ledger, creating it if absent.

        Args:
            path: the ledger file (see :func:`ledger_path`).
            peer_id, delta, budget_epsilon, accountant, unit: must equal the genesis of an
                existing ledger (δ, budget, accountant and privacy unit are fixed for the life of
                a ledger).
            create: create a new ledger when none exists (else raise).

        Raises:
            LedgerBusyError: another writer holds the lock.
            LedgerError: verification failed, the genesis disagrees with the arguments, or the
                ledger is missing while its high-water mark says releases were recorded.
        """
        p = Path(path)
        wanted = seal_genesis(
            Genesis(peer_id, delta, budget_epsilon, accountant, utc_now(), unit=unit)
        )
        p.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = _lock(p)
        try:
            contents = _open_contents(p, wanted, create)
            _check_genesis(contents.genesis, wanted, p.name)
            return cls(p, lock_fd, contents)
        except BaseException:
            os.close(lock_fd)
            raise

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        return tuple(self._entries)

    @property
    def events(self) -> tuple[DpEvent, ...]:
        return tuple(e.event for e in self._entries)

    @property
    def head(self) -> LedgerHead:
        """Count and last hash: publish this to anchor the ledger outside the peer."""
        last = self._entries[-1].hash if self._entries else self.genesis.hash
        return LedgerHead(len(self._entries) + 1, last)

    @property
    def closed(self) -> bool:
        return self._fd is None

    def append(self, events: Sequence[DpEvent]) -> tuple[LedgerEntry, ...]:
        """Durably append ``events`` (one write, one fsync) and advance the high-water mark.

        Returns only once the entries are on stable storage; release only after it returns.

        Raises:
            LedgerError: the ledger is closed, or the write failed (the ledger is then closed;
                reopen it to verify what reached the disk).
        """
        if self._fd is None:
            raise LedgerError(f"{self.path.name}: ledger is closed")
        new: list[LedgerEntry] = []
        prev, now = self.head.hash, utc_now()
        for event in events:
            entry = seal_entry(len(self._entries) + len(new) + 1, event, now, prev)
            new.append(entry)
            prev = entry.hash
        if not new:
            return ()
        try:
            _write_all(self._fd, b"".join(encode_line(e) for e in new))
            os.fsync(self._fd)
            _write_head(self.path, LedgerHead(len(self._entries) + len(new) + 1, prev))
        except OSError as exc:
            self.close()
            raise LedgerError(f"{self.path.name}: append failed ({exc}); reopen to verify") from exc
        self._entries.extend(new)
        return tuple(new)

    def close(self) -> None:
        """Close the file and release the writer lock (idempotent)."""
        for attr in ("_fd", "_lock_fd"):
            fd = getattr(self, attr, None)
            if fd is not None:
                setattr(self, attr, None)
                with contextlib.suppress(OSError):
                    os.close(fd)

    def __enter__(self) -> PrivacyLedger:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def _lock(path: Path) -> int:
    fd = os.open(_lock_path(path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise LedgerBusyError(f"{path.name}: another process is writing this ledger") from exc
    return fd


def _sweep_tmp(path: Path) -> None:
    # Leftovers of an atomic write killed half way; safe to remove while we hold the lock.
    for name in (path.name, _head_path(path).name):
        for leftover in path.parent.glob(f".{name}.tmp-*"):
            with contextlib.suppress(OSError):
                leftover.unlink()


def _create(path: Path, genesis: Genesis) -> LedgerContents:
    # The head is written first: "head present, ledger absent, head count 1" is then the only
    # trace a crash during creation can leave, and it means that nothing was ever recorded.
    _write_head(path, LedgerHead(1, genesis.hash))
    _atomic_write(path, encode_line(genesis))
    log.info("%s: new privacy ledger created", path.name)
    return LedgerContents(genesis, ())


def _open_contents(path: Path, wanted: Genesis, create: bool) -> LedgerContents:
    _sweep_tmp(path)
    head = _read_head(path)
    if not path.exists():
        if head is not None and head.count > 1:
            raise LedgerError(
                f"{path.name}: ledger file missing but {head.count - 1} events were recorded"
            )
        if not create:
            raise LedgerError(f"{path.name}: no such ledger")
        return _create(path, wanted)
    if head is None:
        raise LedgerError(f"{path.name}: high-water mark file is missing")
    data = path.read_bytes()
    contents = _parse(data, path.name)
    _cross_check(contents, head, path.name)
    if contents.torn_bytes:
        log.warning(
            "%s: cutting off a torn final append of %d bytes", path.name, contents.torn_bytes
        )
        with path.open("r+b") as fh:
            fh.truncate(len(data) - contents.torn_bytes)
            fh.flush()
            os.fsync(fh.fileno())
        contents = LedgerContents(contents.genesis, contents.entries)
    if contents.head != head:  # the last append completed but its head update did not
        _write_head(path, contents.head)
    return contents


def _check_genesis(found: Genesis, wanted: Genesis, name: str) -> None:
    for field in ("peer_id", "delta", "budget_epsilon", "accountant", "unit"):
        if getattr(found, field) != getattr(wanted, field):
            raise LedgerError(
                f"{name}: ledger was created with {field}={getattr(found, field)!r}, "
                f"asked for {getattr(wanted, field)!r} (fixed for the life of a ledger)"
            )
