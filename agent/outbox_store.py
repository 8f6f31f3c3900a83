"""The outbox's synchronous SQLite side. Every method runs on the outbox's one executor thread.

``agent.outbox.Outbox`` is the async face; this class owns the one connection and keeps
the row counts in memory (updated only after a COMMIT succeeds) so health can read them
without a COUNT over millions of rows.
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, TypeAlias

from agent.errors import OutboxError
from agent.outbox_capacity import Eviction, delete_rows, make_room
from agent.outbox_codec import (
    PendingPage,
    ReadingContext,
    decode_context,
    decode_reading,
    received_utc_of,
)
from agent.outbox_guard import RESERVE_BLOCK, GuardState, judge_loss, read_guard, write_guard
from agent.outbox_schema import (
    DELIVERED,
    PENDING,
    REJECTED,
    SENT,
    STATE_NAMES,
    configure,
    connect,
    find_corruption,
    migrate,
    quarantine,
    refuse_newer,
)
from agent.readings import StoredReading

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from agent.outbox_codec import EncodedReading

logger = logging.getLogger("agent.outbox")

_CONTINUOUS: Final = 1
_SPOT: Final = 0
_SELECT_ROWS: Final = (
    "SELECT r.seq, r.state, r.reading_id, r.cadence, r.context, r.reject_reason, b.body "
    "FROM readings AS r JOIN bodies AS b ON b.seq = r.seq "
    "WHERE r.state = ? AND r.seq > ? ORDER BY r.seq LIMIT ?"
)
# The publisher's read: no state, no reason, nothing decoded (agent/payloads reads bodies).
_SELECT_PENDING: Final = (
    "SELECT r.seq, r.reading_id, r.cadence, r.context, b.body "
    "FROM readings AS r JOIN bodies AS b ON b.seq = r.seq "
    "WHERE r.state = 0 AND r.seq > ? ORDER BY r.seq LIMIT ?"
)
REQUEUE_ALL_SQL: Final = (
    "UPDATE readings SET state = 0, reject_reason = NULL, state_at_us = NULL WHERE state = 3"
)
_LOOKUP_CHUNK: Final = 500  # natural keys per IN (...) look-up, below SQLite's variable limit
# Each capture group is inserted by ONE statement per table, whatever its size: SQLite loops
# over the rows in C (with the GIL released) instead of Python binding every row. The rows
# arrive packed: reading ids as one blob of 16-byte slices, natural keys as 24-byte
# slices, bodies (UTF-8) space-padded to one width, and cadence + context as a JSON list
# of small integers (context id * 2 + cadence code).
_INSERT_ROWS: Final = (
    "INSERT INTO readings(seq, state, cadence, context, reading_id) "
    "SELECT ?1 + key, 0, value & 1, value >> 1, substr(?2, key * 16 + 1, 16) FROM json_each(?3)"
)
_INSERT_BODIES: Final = (
    "WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n + 1 < ?2) "
    "INSERT INTO bodies(seq, natural_key, body) "
    "SELECT ?1 + n, substr(?3, n * 24 + 1, 24), rtrim(CAST(substr(?4, n * ?5 + 1, ?5) AS TEXT)) "
    "FROM i"
)
_KEY_BYTES: Final = 24
_ID_BYTES: Final = 16


@dataclass(frozen=True, slots=True)
class StateChange:
    """An UPDATE run once per ``params`` row, moving rows from one state to another."""

    sql: str
    params: list[tuple[object, ...]]
    from_state: int
    to_state: int


def seq_changes(
    assign: str,
    values: tuple[object, ...],
    seqs: Sequence[int],
    from_state: int,
    to_state: int,
) -> list[StateChange]:
    """``UPDATE readings SET <assign>`` for the rows ``seqs`` still in ``from_state``.

    One statement per contiguous run of seqs (``BETWEEN``, a range scan of the primary
    key; a drain's PUBACKs cover contiguous runs) and one for all the lone seqs
    (``json_each``), instead of one statement per row. ``assign``'s own parameters are
    ``values``. Rows in any other state are left alone: a row requeued, rejected or
    purged since is never overwritten.
    """
    runs, lone = _seq_runs(seqs)
    guard = f"AND state = {int(from_state)}"
    changes: list[StateChange] = []
    if runs:
        sql = f"UPDATE readings SET {assign} WHERE seq BETWEEN ? AND ? {guard}"  # noqa: S608
        changes.append(
            StateChange(sql, [(*values, first, last) for first, last in runs], from_state, to_state)
        )
    if lone:
        sql = (
            f"UPDATE readings SET {assign} "  # noqa: S608 - our constants and ints only
            f"WHERE seq IN (SELECT value FROM json_each(?)) {guard}"
        )
        listed = f"[{','.join(map(str, lone))}]"
        changes.append(StateChange(sql, [(*values, listed)], from_state, to_state))
    return changes


def _seq_runs(seqs: Sequence[int]) -> tuple[list[tuple[int, int]], list[int]]:
    """Distinct ``seqs`` as (first, last) runs of two or more consecutive seqs, and the rest."""
    runs: list[tuple[int, int]] = []
    lone: list[int] = []
    ordered = sorted(set(seqs))
    if not ordered:
        return runs, lone
    first = last = ordered[0]
    for seq in ordered[1:]:
        if seq != last + 1:
            if last > first:
                runs.append((first, last))
            else:
                lone.append(first)
            first = seq
        last = seq
    if last > first:
        runs.append((first, last))
    else:
        lone.append(first)
    return runs, lone


# A write for the group commit: the encoded readings of one capture() call, or a state change.
Write: TypeAlias = "list[EncodedReading] | StateChange"


def _advice(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", "")
    if name.startswith("SQLITE_FULL"):
        return "the outbox disk is full; free space on its partition"
    if name.startswith("SQLITE_IOERR"):
        return "the storage device reported an I/O error; check it (dmesg)"
    if name.startswith("SQLITE_BUSY"):
        return "another process holds the outbox lock; is a second agent running?"
    return "see the SQLite error"


def _without_seen(group: Sequence[EncodedReading], seen: set[bytes]) -> list[EncodedReading]:
    """Readings of ``group`` whose key is not in ``seen``; adds the kept keys to ``seen``."""
    fresh: list[EncodedReading] = []
    for enc in group:
        if enc.natural_key_hash not in seen:
            seen.add(enc.natural_key_hash)
            fresh.append(enc)
    return fresh


class OutboxStore:
    """One SQLite connection and the in-memory view of its counts."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        *,
        capacity_readings: int,
        receipts: bool,
        quarantined: Path | None,
    ) -> None:
        """Take over an open, migrated connection and load counts, counters and contexts."""
        self._conn = conn
        self.path = path
        self.capacity_readings = capacity_readings
        self.receipts = receipts
        self.quarantined = quarantined
        self.data_loss: str | None = None  # why committed readings may be gone, if so
        self._reserved_seq = 0
        self.commits = 0
        self.duplicates_total = 0
        self.counts = dict.fromkeys(STATE_NAMES, 0)
        for state, count in conn.execute("SELECT state, count(*) FROM readings GROUP BY state"):
            self.counts[state] = count
        self.counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
        self._context_ids: dict[str, int] = {}
        self._contexts: dict[int, ReadingContext] = {}
        for context_id, body in conn.execute("SELECT id, body FROM contexts"):
            self._context_ids[body] = context_id
            self._contexts[context_id] = decode_context(body)

    @classmethod
    def open(cls, path: Path, *, capacity_readings: int, receipts: bool) -> OutboxStore:
        """Open (creating, migrating, or quarantining a corrupt file) the outbox at ``path``."""
        quarantined: Path | None = None
        # Read before SQLite opens the file (it creates the -wal on first use).
        wal_existed = path.with_name(path.name + "-wal").exists()
        prior = read_guard(path)
        try:
            conn = connect(path)
        except sqlite3.Error as exc:
            raise OutboxError(
                f"{path}: cannot open the outbox ({exc}); does its directory exist and is it "
                "writable by the agent?"
            ) from exc
        problem = find_corruption(conn)
        if problem is not None:
            conn.close()
            try:
                quarantined = quarantine(path)
            except OSError as exc:
                raise OutboxError(f"{path}: corrupt and cannot be moved aside: {exc}") from exc
            logger.critical(
                "outbox database is corrupt (%s); moved to %s; starting a fresh outbox",
                problem,
                quarantined,
            )
            conn = connect(path)
        try:
            refuse_newer(conn, path)
            configure(conn, path)
            migrate(conn, path)
            cls._set_receipt_index(conn, receipts=receipts)
            store = cls(
                conn,
                path,
                capacity_readings=capacity_readings,
                receipts=receipts,
                quarantined=quarantined,
            )
            store.start_seq_guard(prior, wal_existed=wal_existed)
        except sqlite3.Error as exc:
            conn.close()
            raise OutboxError(f"{path}: cannot open the outbox: {exc}") from exc
        except OSError as exc:
            conn.close()
            raise OutboxError(f"{path}: cannot write the seq guard: {exc}") from exc
        except OutboxError:
            conn.close()
            raise
        return store

    @staticmethod
    def _set_receipt_index(conn: sqlite3.Connection, *, receipts: bool) -> None:
        # Receipts look rows up by reading_id. A random-UUID index costs a page write per
        # row, so it exists only when receipts are on, and holds only sent rows.
        if receipts:
            conn.execute(
                "CREATE INDEX IF NOT EXISTS readings_sent_by_id "
                "ON readings(reading_id) WHERE state = 1"
            )
        else:
            conn.execute("DROP INDEX IF EXISTS readings_sent_by_id")

    # -- the seq guard (agent/outbox_guard.py) -----------------------------------------

    def start_seq_guard(self, prior: GuardState | None, *, wal_existed: bool) -> None:
        """Judge a possible loss since the last run, never reuse a seq, mark us running.

        Raises:
            OSError: the guard file cannot be written.
        """
        last = self.last_seq()
        self.data_loss = judge_loss(
            prior, last_seq=last, wal_existed=wal_existed, quarantined=self.quarantined is not None
        )
        if self.data_loss is not None and prior is not None and prior.reserved_seq > last:
            # Continue above everything that may have been handed out: a gap, never a reuse.
            with self._transaction("seq guard"):
                self._set_last_seq(prior.reserved_seq)
            logger.critical(
                "outbox: %s; readings may be lost; seq continues at %d",
                self.data_loss,
                prior.reserved_seq + 1,
            )
        # Reserved from the last committed seq, not above the previous reservation: a seq
        # past it was never committed, so never published. (Stacking blocks on every
        # start once made every third clean restart with few readings look like lost rows.)
        committed = self.last_seq()
        self._reserved_seq = committed + RESERVE_BLOCK
        write_guard(self.path, GuardState(self._reserved_seq, clean=False, committed_seq=committed))

    def _set_last_seq(self, seq: int) -> None:
        updated = self._conn.execute(
            "UPDATE sqlite_sequence SET seq = ? WHERE name = 'readings'", (seq,)
        ).rowcount
        if not updated:
            self._conn.execute(
                "INSERT INTO sqlite_sequence(name, seq) VALUES ('readings', ?)", (seq,)
            )

    def _reserve(self, first_seq: int, highest_seq: int) -> None:
        """Make the guard cover ``highest_seq`` before it is used (one fsync per block).

        The guard records ``first_seq - 1`` as committed, not anything of this
        transaction: if it then fails (a full disk), the next start must not read the
        missing rows as lost, however many readings the COMMIT held.
        """
        if highest_seq <= self._reserved_seq:
            return
        reserved = max(highest_seq, first_seq - 1 + RESERVE_BLOCK)
        try:
            write_guard(self.path, GuardState(reserved, clean=False, committed_seq=first_seq - 1))
        except OSError as exc:
            raise sqlite3.OperationalError(f"seq guard not written: {exc}") from exc
        self._reserved_seq = reserved

    # -- transactions -------------------------------------------------------------

    @contextmanager
    def _transaction(self, action: str) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT; any SQLite failure rolls back and becomes OutboxError."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            yield
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(action)
            raise OutboxError(f"outbox {action} failed ({exc}): {_advice(exc)}") from exc
        except BaseException:
            # Never leave a transaction open behind an error: the next BEGIN would fail.
            self._rollback(action)
            raise
        self.commits += 1

    def _rollback(self, action: str) -> None:
        if not self._conn.in_transaction:
            return  # SQLite already rolled back (e.g. a failed COMMIT on a full disk)
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            logger.warning("outbox rollback after a failed %s also failed: %s", action, exc)

    # -- writes (group commit) ---------------------------------------------------

    def apply(self, ops: Sequence[Write]) -> list[tuple[int, int]]:
        """Run every write in ONE transaction.

        Returns, per write: (stored, duplicates) for a capture, (rows changed, 0) for a
        state change. The in-memory counts change only once the COMMIT returned. State
        changes run first, then every capture's rows together in their order: a state
        change only touches rows committed earlier, so the two never meet.
        """
        new_contexts: dict[str, int] = {}
        changes: list[tuple[int, int]] = []  # (rows changed, 0) per state change
        counts = dict(self.counts)
        captures = [op for op in ops if not isinstance(op, StateChange)]
        with self._transaction("write"):
            for op in ops:
                if isinstance(op, StateChange):
                    before = self._conn.total_changes
                    self._conn.executemany(op.sql, op.params)
                    changed = self._conn.total_changes - before
                    counts[op.from_state] -= changed
                    counts[op.to_state] += changed
                    changes.append((changed, 0))
            captured = self._insert_captures(captures, new_contexts)
            counts[PENDING] += sum(stored for stored, _ in captured)
            # Only new rows can overflow the capacity; a state change never evicts.
            eviction = None
            if any(stored for stored, _ in captured):
                eviction = make_room(self._conn, counts, self.capacity_readings)
        for body, context_id in new_contexts.items():
            self._context_ids[body] = context_id
            self._contexts[context_id] = decode_context(body)
        self.counts = counts
        self.duplicates_total += sum(dups for _, dups in captured)
        if eviction is not None:
            self._report_eviction(eviction)
        by_change, by_capture = iter(changes), iter(captured)
        return [next(by_change if isinstance(op, StateChange) else by_capture) for op in ops]

    def _insert_captures(
        self, captures: Sequence[Sequence[EncodedReading]], new_contexts: dict[str, int]
    ) -> list[tuple[int, int]]:
        """Insert every capture's new readings; (stored, duplicates) per capture."""
        rows = [enc for op in captures for enc in op]
        if not rows:
            return [(0, 0) for _ in captures]
        # Seqs are given explicitly (one past the AUTOINCREMENT high-water mark, inside
        # this write transaction) so the bodies rows can share them; SQLite still raises
        # the high-water mark, so a seq is never reused.
        first_seq = self.last_seq() + 1
        self._reserve(first_seq, first_seq + len(rows) - 1)
        try:
            self._insert_bodies(rows, first_seq)
            captured = [(len(op), 0) for op in captures]
        except sqlite3.IntegrityError:
            # A natural key is stored already (a device re-sent a record) or twice in
            # this group. The failed statement left nothing behind: drop the duplicates,
            # so no seq is used up by them, and insert the rest.
            seen = self._known_keys(rows)
            fresh_by_capture = [_without_seen(op, seen) for op in captures]
            rows = [enc for fresh in fresh_by_capture for enc in fresh]
            captured = [
                (len(fresh), len(op) - len(fresh))
                for op, fresh in zip(captures, fresh_by_capture, strict=True)
            ]
            if not rows:
                return captured
            self._insert_bodies(rows, first_seq)
        self._insert_readings(rows, first_seq, new_contexts)
        return captured

    def _insert_bodies(self, rows: Sequence[EncodedReading], first_seq: int) -> None:
        bodies = [enc.body.encode() for enc in rows]
        width = max(map(len, bodies))
        # JSON bodies end in "]", so trimming the padding restores them exactly.
        padded = b"".join([body.ljust(width) for body in bodies])
        keys = b"".join([enc.natural_key_hash for enc in rows])
        if len(keys) != _KEY_BYTES * len(rows):
            raise OutboxError("a natural key hash is not 24 bytes (an outbox codec bug)")
        self._conn.execute(_INSERT_BODIES, (first_seq, len(rows), keys, padded, width))

    def _insert_readings(
        self, rows: Sequence[EncodedReading], first_seq: int, new_contexts: dict[str, int]
    ) -> None:
        ids = b"".join([enc.reading_id for enc in rows])
        if len(ids) != _ID_BYTES * len(rows):
            raise OutboxError("a reading id is not 16 bytes (an outbox codec bug)")
        # Usually one context per group: look each distinct one up once.
        base = {
            text: 2 * self._context_id(text, new_contexts)
            for text in dict.fromkeys([enc.context_json for enc in rows])
        }
        codes = [str(base[enc.context_json] + enc.cadence) for enc in rows]  # cadence is 0 or 1
        self._conn.execute(_INSERT_ROWS, (first_seq, ids, f"[{','.join(codes)}]"))

    def _known_keys(self, rows: Sequence[EncodedReading]) -> set[bytes]:
        """The natural keys of ``rows`` that are stored already (one look-up per 500).

        Checked before inserting (not INSERT OR IGNORE): an ignored insert still uses up
        an AUTOINCREMENT seq, and the backend would read that gap as a lost reading.
        """
        keys = [enc.natural_key_hash for enc in rows]
        known: set[bytes] = set()
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            known.update(
                row[0]
                for row in self._conn.execute(
                    f"SELECT natural_key FROM bodies WHERE natural_key IN ({marks})",  # noqa: S608
                    chunk,
                )
            )
        return known

    def _context_id(self, body: str, new_contexts: dict[str, int]) -> int:
        known = self._context_ids.get(body)
        if known is None:
            known = new_contexts.get(body)
        if known is None:
            cursor = self._conn.execute("INSERT INTO contexts(body) VALUES (?)", (body,))
            known = int(cursor.lastrowid or 0)
            new_contexts[body] = known
        return known

    # -- capacity -----------------------------------------------------------------

    def _report_eviction(self, eviction: Eviction) -> None:
        self.counters["audit_truncated"] += eviction.audit_truncated
        self.counters["evicted_continuous"] += eviction.continuous
        self.counters["evicted_spot"] += eviction.spot
        logger.warning(
            "outbox full (capacity %d readings): removed %d sent rows before their audit "
            "window, evicted %d continuous and %d spot unsent readings",
            self.capacity_readings,
            eviction.audit_truncated,
            eviction.continuous,
            eviction.spot,
        )

    def change_state(
        self, sql: str, params: Sequence[tuple[object, ...]], from_state: int, to_state: int
    ) -> int:
        """One state change in a transaction of its own (for tools beside the agent)."""
        return self.apply([StateChange(sql, list(params), from_state, to_state)])[0][0]

    def requeue_all_rejected(self) -> int:
        """Every rejected row back to pending, in a transaction of its own."""
        return self.change_state(REQUEUE_ALL_SQL, [()], REJECTED, PENDING)

    def purge_chunk(self, cutoff_us: int, limit: int) -> int:
        """Delete up to ``limit`` purgeable rows whose state changed before ``cutoff_us``."""
        states = (DELIVERED,) if self.receipts else (SENT, DELIVERED)
        placeholders = ",".join("?" * len(states))
        with self._transaction("purge"):
            rows = self._conn.execute(
                f"SELECT seq, state FROM readings INDEXED BY readings_by_age "  # noqa: S608
                f"WHERE state IN (1, 2) "
                f"AND state IN ({placeholders}) AND state_at_us < ? LIMIT ?",
                (*states, cutoff_us, limit),
            ).fetchall()
            eviction = Eviction()
            delete_rows(self._conn, rows, eviction)
        for state, n in eviction.by_state.items():
            self.counts[state] -= n
        return len(rows)

    # -- reads --------------------------------------------------------------------

    def select(self, state: int, after_seq: int, limit: int) -> list[StoredReading]:
        """Rows in ``state`` with seq > ``after_seq``, in seq order."""
        rows = self._conn.execute(_SELECT_ROWS, (state, after_seq, limit)).fetchall()
        return [
            StoredReading(
                seq=seq,
                reading=decode_reading(reading_id, cadence, self._contexts[context], body),
                state=STATE_NAMES[row_state],
                reject_reason=reason,
            )
            for seq, row_state, reading_id, cadence, context, reason, body in rows
        ]

    def pending_page(self, after_seq: int, limit: int) -> PendingPage:
        """Pending rows with seq > ``after_seq`` undecoded, in seq order, with their contexts."""
        rows = self._conn.execute(_SELECT_PENDING, (after_seq, limit)).fetchall()
        contexts = self._contexts
        # Only the contexts these rows name: a snapshot the loop thread may keep reading
        # while this thread adds new contexts to the store's own dict.
        return PendingPage(rows, {cid: contexts[cid] for cid in {row[3] for row in rows}})

    def oldest_pending(self) -> tuple[int, datetime] | None:
        """Seq and hub receipt time of the oldest pending row."""
        row = self._conn.execute(
            "SELECT r.seq, b.body FROM readings AS r JOIN bodies AS b ON b.seq = r.seq "
            "WHERE r.state = 0 ORDER BY r.seq LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        return int(row[0]), received_utc_of(row[1]).astimezone(UTC)

    def last_seq(self) -> int:
        """The highest seq ever handed out (kept by AUTOINCREMENT across deletes)."""
        row = self._conn.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'readings'"
        ).fetchone()
        return int(row[0]) if row else 0

    def db_bytes(self) -> int:
        """Main database plus WAL size on disk."""
        total = 0
        for suffix in ("", "-wal"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                total += side.stat().st_size
        return total

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close."""
        try:
            committed = self.last_seq()
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            # The WAL stays and is replayed at the next open: nothing is lost.
            logger.warning("outbox checkpoint at close failed: %s", exc)
            self._conn.close()
            return  # not clean: the WAL is still needed at the next open
        self._conn.close()
        if not self._reserved_seq:
            return  # a tool's view of the outbox (outboxview.py), not the agent's: no guard
        try:
            # Everything up to ``committed`` is now in the main file: the next open must
            # find at least that much (an older copy of the file put back would not).
            write_guard(
                self.path, GuardState(self._reserved_seq, clean=True, committed_seq=committed)
            )
        except OSError as exc:
            logger.warning("outbox seq guard not marked clean: %s", exc)
