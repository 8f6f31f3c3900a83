"""The outbox as technician tools see it, beside a running agent.

``doctor``, ``status`` and ``queue`` read the database through a read-only connection
(``agent.outbox_schema.open_readonly``): in WAL mode a reader never blocks the agent's
writer and sees the last committed state. The one write, ``requeue_rejected``, is a
single short ``BEGIN IMMEDIATE`` transaction with a busy timeout, so it waits its turn
behind the agent's group commit (milliseconds) and never interleaves with it.

Reads and the requeue go through ``agent.outbox_store.OutboxStore`` itself (over a
read-only connection for reads), so the SQL lives in one place. The running agent keeps
its row counts in memory; rows requeued here are picked up by its
publisher on its next connect or rescan. ``wardlink queue requeue`` says so.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from agent.errors import OutboxError
from agent.outbox_schema import (
    PENDING,
    REJECTED,
    STATE_CODES,
    STATE_NAMES,
    connect,
    find_corruption,
    open_readonly,
)
from agent.outbox_store import OutboxStore

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from agent.readings import StoredReading

_REQUEUE_SEQ: Final = (
    "UPDATE readings SET state = 0, reject_reason = NULL, state_at_us = NULL "
    "WHERE seq = ? AND state = 3"
)


@dataclass(frozen=True, slots=True)
class OutboxSummary:
    """Counts and ages read from the database file (not from the agent's memory)."""

    counts: dict[str, int]  # state name -> rows
    oldest_pending_received_at: datetime | None
    last_seq: int
    db_bytes: int

    @property
    def pending(self) -> int:
        """Readings not yet accepted by the broker."""
        return self.counts.get("pending", 0)

    @property
    def rejected(self) -> int:
        """Readings the broker refused; kept until someone requeues them."""
        return self.counts.get("rejected", 0)

    def oldest_pending_age_s(self, now: datetime) -> float | None:
        """How long the oldest unsent reading has waited, in seconds."""
        if self.oldest_pending_received_at is None:
            return None
        return max(0.0, (now - self.oldest_pending_received_at).total_seconds())


@contextmanager
def _reader(path: Path) -> Iterator[OutboxStore]:
    """The outbox's own store code over a read-only connection (its SELECTs only).

    Raises:
        OutboxError: no outbox there, or it cannot be read.
    """
    with closing(open_readonly(path)) as conn:
        try:
            yield OutboxStore(conn, path, capacity_readings=0, receipts=False, quarantined=None)
        except sqlite3.Error as exc:
            raise OutboxError(f"{path}: cannot read the outbox: {exc}") from exc


def summarize(path: Path) -> OutboxSummary:
    """Read the counts of the outbox at ``path`` without disturbing a running agent.

    Raises:
        OutboxError: no outbox there, or it cannot be read.
    """
    with _reader(path) as store:
        counts = {STATE_NAMES[code]: n for code, n in store.counts.items()}
        oldest = store.oldest_pending()
        return OutboxSummary(
            counts,
            None if oldest is None else oldest[1].astimezone(UTC),
            store.last_seq(),
            store.db_bytes(),
        )


def check_integrity(path: Path) -> str | None:
    """SQLite's ``quick_check`` complaint about the file, or None when it is sound."""
    with closing(open_readonly(path)) as conn:
        return find_corruption(conn)


def iter_readings(path: Path, state: str, *, page_rows: int = 1000) -> Iterator[StoredReading]:
    """Every reading in ``state``, in seq order, a page at a time (bounded memory).

    Raises:
        ValueError: ``state`` is not a state name.
        OutboxError: the outbox cannot be read.
    """
    code = STATE_CODES.get(state)
    if code is None:
        raise ValueError(f"state must be one of {', '.join(STATE_CODES)}; got {state!r}")
    with _reader(path) as store:
        after_seq = 0
        while True:
            rows = store.select(code, after_seq, page_rows)
            yield from rows
            if len(rows) < page_rows:
                return
            after_seq = rows[-1].seq


def requeue_rejected(path: Path, seqs: Sequence[int] | None) -> int:
    """Move rejected readings (all, or ``seqs``) back to pending, in one short transaction.

    Only the state of rejected rows changes; nothing is deleted. Safe while the agent
    runs: WAL mode, and ``BEGIN IMMEDIATE`` waits (up to the busy timeout) for the agent's
    current commit instead of failing.

    Raises:
        OutboxError: the outbox is missing, busy for longer than the timeout, or read-only.
    """
    if not path.exists():
        raise OutboxError(f"{path}: no outbox database here")
    with closing(connect(path)) as conn:
        try:
            store = OutboxStore(conn, path, capacity_readings=0, receipts=False, quarantined=None)
        except sqlite3.Error as exc:
            raise OutboxError(f"{path}: cannot read the outbox: {exc}") from exc
        if seqs is None:
            return store.requeue_all_rejected()
        params = [(seq,) for seq in sorted(set(seqs))]
        return store.change_state(_REQUEUE_SEQ, params, REJECTED, PENDING)
