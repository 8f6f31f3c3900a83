"""The outbox as technician tools see it, beside a running agent.

``doctor``, ``status`` and ``queue`` read the database through a read-only connection
(``agent.outbox_schema.open_readonly``): in WAL mode a reader never blocks the agent's
writer and sees the last committed state. The one write, ``requeue_rejected``, is a
single short ``BEGIN IMMEDIATE`` transaction with a busy timeout, so it waits its turn
behind the agent's group commit (milliseconds) and never interleaves with it.

The running agent keeps its row counts in memory; rows requeued here are picked up by its
publisher on its next connect or rescan. ``wardlink queue requeue`` says so.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from agent.errors import OutboxError
from agent.outbox_codec import decode_context, decode_reading
from agent.outbox_schema import (
    BUSY_TIMEOUT_S,
    PENDING,
    REJECTED,
    STATE_CODES,
    STATE_NAMES,
    find_corruption,
    open_readonly,
)
from agent.readings import StoredReading

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from agent.outbox_codec import ReadingContext

_ROWS: Final = (
    "SELECT seq, state, reading_id, context, reject_reason, body FROM readings "
    "WHERE state = ? AND seq > ? ORDER BY seq LIMIT ?"
)
_REQUEUE_CHUNK: Final = 500  # seqs per UPDATE statement, below SQLite's variable limit


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


def db_bytes(path: Path) -> int:
    """Main database plus WAL size on disk."""
    total = 0
    for side in (path, path.with_name(path.name + "-wal")):
        if side.exists():
            total += side.stat().st_size
    return total


def summarize(path: Path) -> OutboxSummary:
    """Read the counts of the outbox at ``path`` without disturbing a running agent.

    Raises:
        OutboxError: no outbox there, or it cannot be read.
    """
    with closing(open_readonly(path)) as conn:
        try:
            counts = dict.fromkeys(STATE_CODES, 0)
            for state, count in conn.execute("SELECT state, count(*) FROM readings GROUP BY state"):
                counts[STATE_NAMES[state]] = count
            oldest = _oldest_pending(conn)
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'readings'").fetchone()
        except sqlite3.Error as exc:
            raise OutboxError(f"{path}: cannot read the outbox: {exc}") from exc
    return OutboxSummary(counts, oldest, int(row[0]) if row else 0, db_bytes(path))


def _oldest_pending(conn: sqlite3.Connection) -> datetime | None:
    row = conn.execute(
        "SELECT r.reading_id, c.body, r.body FROM readings r JOIN contexts c ON c.id = r.context "
        "WHERE r.state = ? ORDER BY r.seq LIMIT 1",
        (PENDING,),
    ).fetchone()
    if row is None:
        return None
    reading = decode_reading(row[0], decode_context(row[1]), row[2])
    return reading.received.utc.astimezone(UTC)


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
    with closing(open_readonly(path)) as conn:
        contexts: dict[int, ReadingContext] = {}
        after_seq = 0
        while True:
            try:
                rows = conn.execute(_ROWS, (code, after_seq, page_rows)).fetchall()
            except sqlite3.Error as exc:
                raise OutboxError(f"{path}: cannot read the outbox: {exc}") from exc
            for seq, row_state, reading_id, context_id, reason, body in rows:
                if context_id not in contexts:
                    contexts[context_id] = _load_context(conn, context_id)
                context = contexts[context_id]
                reading = decode_reading(reading_id, context, body)
                yield StoredReading(seq, reading, STATE_NAMES[row_state], reason)
            if len(rows) < page_rows:
                return
            after_seq = rows[-1][0]


def _load_context(conn: sqlite3.Connection, context_id: int) -> ReadingContext:
    row = conn.execute("SELECT body FROM contexts WHERE id = ?", (context_id,)).fetchone()
    return decode_context(row[0])


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
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        changed = _requeue_in_transaction(conn, seqs)
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise OutboxError(f"{path}: requeue failed, nothing changed: {exc}") from exc
    finally:
        conn.close()
    return changed


def _requeue_in_transaction(conn: sqlite3.Connection, seqs: Sequence[int] | None) -> int:
    update = (
        "UPDATE readings SET state = ?, reject_reason = NULL, state_at_us = NULL WHERE state = ?"
    )
    if seqs is None:
        return conn.execute(update, (PENDING, REJECTED)).rowcount
    changed = 0
    unique = sorted(set(seqs))
    for start in range(0, len(unique), _REQUEUE_CHUNK):
        chunk = unique[start : start + _REQUEUE_CHUNK]
        marks = ",".join("?" * len(chunk))
        cursor = conn.execute(f"{update} AND seq IN ({marks})", (PENDING, REJECTED, *chunk))
        changed += cursor.rowcount
    return changed
