"""The outbox's SQLite schema, its migrations, and opening a database safely.

The schema version lives in ``PRAGMA user_version``. ``MIGRATIONS[i]`` takes a database
from version ``i`` to ``i + 1``; adding migration 2 is appending one function. A database
whose version is newer than this code knows is refused without writing to it (a
downgraded agent must not scribble over a newer layout).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from agent.errors import OutboxError

if TYPE_CHECKING:
    from pathlib import Path

logger = logging.getLogger(__name__)

# Row states, stored as small integers (the text names are the public API).
STATE_CODES: Final[dict[str, int]] = {"pending": 0, "sent": 1, "delivered": 2, "rejected": 3}
STATE_NAMES: Final[dict[int, str]] = {code: name for name, code in STATE_CODES.items()}
PENDING: Final = 0
SENT: Final = 1
DELIVERED: Final = 2
REJECTED: Final = 3

COUNTER_NAMES: Final = ("evicted_continuous", "evicted_spot", "audit_truncated")

# Wait this long for a lock held by another process (a CLI tool's read transaction
# never blocks us in WAL mode; another agent instance on the same file would).
BUSY_TIMEOUT_S: Final = 5.0


def _migration_1(conn: sqlite3.Connection) -> None:
    """Readings, the contexts they share, and persistent counters."""
    conn.execute(
        """CREATE TABLE contexts (
               id INTEGER PRIMARY KEY,
               body TEXT NOT NULL UNIQUE)"""
    )
    # seq is AUTOINCREMENT so a purged or evicted seq is never handed out again
    # (reliability.md 3.1, rowid reuse trap). state_at_us: when the state last changed.
    # The immutable part of a reading lives in `bodies`, so a state change rewrites
    # only these small rows (a page of bodies rewritten per mark_sent wears the card).
    conn.execute(
        """CREATE TABLE readings (
               seq INTEGER PRIMARY KEY AUTOINCREMENT,
               state INTEGER NOT NULL,
               cadence INTEGER NOT NULL,
               context INTEGER NOT NULL REFERENCES contexts(id),
               reading_id BLOB NOT NULL,
               state_at_us INTEGER,
               reject_reason TEXT)"""
    )
    conn.execute(
        """CREATE TABLE bodies (
               seq INTEGER PRIMARY KEY,
               natural_key BLOB NOT NULL UNIQUE,
               body TEXT NOT NULL)"""
    )
    conn.execute("CREATE INDEX readings_by_state ON readings(state, seq)")
    # Only sent/delivered rows age out; indexing just those keeps purge a range scan.
    conn.execute("CREATE INDEX readings_by_age ON readings(state_at_us) WHERE state IN (1, 2)")
    conn.execute(
        """CREATE TABLE counters (
               name TEXT PRIMARY KEY,
               value INTEGER NOT NULL) WITHOUT ROWID"""
    )
    conn.executemany(
        "INSERT INTO counters(name, value) VALUES (?, 0)", [(n,) for n in COUNTER_NAMES]
    )


Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: tuple[Migration, ...] = (_migration_1,)


def schema_version(conn: sqlite3.Connection) -> int:
    """The database's ``user_version``."""
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def refuse_newer(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse, before anything is written, a database newer than this code.

    Raises:
        OutboxError: the schema version is above ``len(MIGRATIONS)``.
    """
    version = schema_version(conn)
    if version > len(MIGRATIONS):
        raise OutboxError(
            f"{path}: outbox schema version {version} is newer than this wardlink "
            f"understands ({len(MIGRATIONS)}); upgrade wardlink (the database was not modified)"
        )


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to ``len(MIGRATIONS)``, each step in its own transaction.

    Raises:
        OutboxError: the database is newer than this code, or a migration failed.
    """
    refuse_newer(conn, path)
    for index in range(schema_version(conn), len(MIGRATIONS)):
        conn.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[index](conn)
            conn.execute(f"PRAGMA user_version = {index + 1}")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise OutboxError(f"{path}: outbox migration {index + 1} failed: {exc}") from exc
        logger.info("outbox schema migrated to version %d", index + 1)


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode: every transaction is explicit (BEGIN/COMMIT)."""
    return sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=True
    )


def configure(conn: sqlite3.Connection, path: Path) -> None:
    """WAL + synchronous=FULL: a returned COMMIT survives kill -9 and power loss."""
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise OutboxError(f"{path}: cannot use WAL mode here (got {mode!r}); use a local disk")
    conn.execute("PRAGMA synchronous=FULL")
    # A larger checkpoint interval writes each hot page (index tails, sequence) to the
    # main file once per checkpoint instead of once per 1000 pages: less SD-card wear.
    conn.execute("PRAGMA wal_autocheckpoint=4000")
    conn.execute("PRAGMA journal_size_limit=67108864")
    # Debian builds SQLite with secure_delete ON: every purged row's page is rewritten
    # with zeros, doubling the writes of a purge. FAST still zeroes deleted content on
    # pages being written anyway; freed pages keep their old bytes until reused.
    conn.execute("PRAGMA secure_delete=FAST")
    # 4 MiB of page cache. Every hot path is sequential (captures append, the publisher
    # pages by seq, purge deletes the oldest): 16 MiB ran no faster in bench/capture.py,
    # bench/drain.py or a week of backlog (bench/outage_soak.py), and held 15 MiB more
    # RSS once full (62.9 vs 48.0 MiB), which a Pi-class hub feels.
    conn.execute("PRAGMA cache_size=-4096")
    conn.execute("PRAGMA temp_store=MEMORY")
    try:
        # Captures are inserted set-based over json_each (agent.outbox_store): refuse at
        # open, not at the first capture, a SQLite built without the JSON functions.
        conn.execute("SELECT count(*) FROM json_each('[0]')").fetchone()
    except sqlite3.OperationalError as exc:
        raise OutboxError(
            f"{path}: this SQLite ({sqlite3.sqlite_version}) lacks the JSON functions the "
            "outbox needs; use SQLite 3.38 or newer, or a build with JSON1 enabled"
        ) from exc


def find_corruption(conn: sqlite3.Connection) -> str | None:
    """``PRAGMA quick_check``'s complaint, or None when the database is sound.

    Reading only: a corrupt file must not be written to.
    """
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    problems = [str(r[0]) for r in rows if r[0] != "ok"]
    return "; ".join(problems[:3]) if problems else None


def quarantine(path: Path) -> Path:
    """Move a corrupt database and its -wal/-shm aside (never delete) and return the new path.

    The sidecars keep their suffixes so ``sqlite3 <name>.corrupt-<ts>`` (and ``.recover``)
    still sees the WAL content.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))
    path.rename(target)
    return target


def open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection for CLI tools; it never disturbs a running agent.

    Raises:
        OutboxError: the file does not exist or is not an outbox.
    """
    if not path.exists():
        raise OutboxError(f"{path}: no outbox database here")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        schema_version(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise OutboxError(f"{path}: cannot read the outbox: {exc}") from exc
    return conn
