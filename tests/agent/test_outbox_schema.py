"""Schema migrations, refusing a newer database, and quarantining corrupt files at open."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from typing import TYPE_CHECKING

import pytest

import agent.outbox_schema
from agent.errors import OutboxError
from agent.outbox import Outbox
from tests.agent.test_outbox_factory import bp_record, stream_sample

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

PAGE_SIZE = 4096


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


async def _populated(path: Path, n: int = 400) -> None:
    outbox = await Outbox.open(path)
    await outbox.capture([stream_sample(i) for i in range(n)] + [bp_record(1)])
    await outbox.close()


async def test_a_new_database_gets_the_current_schema(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db")
    await outbox.close()
    assert _user_version(tmp_path / "outbox.db") == len(agent.outbox_schema.MIGRATIONS) == 1


async def test_an_older_database_is_migrated_and_keeps_its_readings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "outbox.db"
    outbox = await Outbox.open(db)
    await outbox.capture([bp_record(1)])
    await outbox.close()

    def add_note_column(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE readings ADD COLUMN note TEXT")

    # Adding migration 2 is appending one function.
    monkeypatch.setattr(
        agent.outbox_schema, "MIGRATIONS", (*agent.outbox_schema.MIGRATIONS, add_note_column)
    )
    migrated = await Outbox.open(db)
    rows = await migrated.pending_batch()
    await migrated.close()

    assert _user_version(db) == 2
    assert [r.reading.natural_key for r in rows] == [bp_record(1).natural_key]
    conn = sqlite3.connect(db)
    columns = [row[1] for row in conn.execute("PRAGMA table_info(readings)")]
    conn.close()
    assert "note" in columns


async def test_a_newer_database_is_refused_and_not_touched(tmp_path: Path) -> None:
    db = tmp_path / "outbox.db"
    await _populated(db, n=5)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 7")
    conn.close()
    before = _digest(db)

    with pytest.raises(OutboxError, match="newer than this wardlink understands"):
        await Outbox.open(db)

    assert _digest(db) == before
    # The seq guard of the earlier run is there, as it was: a refused open writes nothing.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outbox.db", "outbox.db.seq"]


async def _last_seq(db: Path) -> int:
    outbox = await Outbox.open(db)
    try:
        return (await outbox.stats()).last_seq
    finally:
        await outbox.close()


def _garbage_header(db: Path) -> None:
    with db.open("r+b") as f:
        f.write(b"\x00not sqlite at all\xff" * 5)


def _flip_page_headers(db: Path) -> None:
    data = bytearray(db.read_bytes())
    for page in range(1, len(data) // PAGE_SIZE):
        start = page * PAGE_SIZE
        for i in range(start, start + 12):
            data[i] ^= 0xFF
    db.write_bytes(bytes(data))


def _truncate(db: Path) -> None:
    size = db.stat().st_size
    with db.open("r+b") as f:
        f.truncate((size // PAGE_SIZE // 2) * PAGE_SIZE)


def _not_a_database(db: Path) -> None:
    db.write_text("hub_id: hub-1\nmqtt:\n  host: broker.example\n" * 200)


@pytest.mark.parametrize(
    "corrupt",
    [_garbage_header, _flip_page_headers, _truncate, _not_a_database],
    ids=["garbage-header", "flipped-bytes", "truncated", "not-a-database"],
)
async def test_a_corrupt_database_is_moved_aside_and_capture_continues(
    tmp_path: Path, corrupt: Callable[[Path], None], caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "outbox.db"
    await _populated(db)
    handed_out = await _last_seq(db)
    corrupt(db)
    corrupt_digest = _digest(db)

    with caplog.at_level(logging.CRITICAL, logger="agent.outbox"):
        outbox = await Outbox.open(db)
    result = await outbox.capture([stream_sample(1000)])
    stats = await outbox.stats()
    moved = outbox.quarantined
    await outbox.close()

    assert moved is not None
    assert moved.name.startswith("outbox.db.corrupt-")
    assert _digest(moved) == corrupt_digest  # kept byte for byte, never written to
    assert stats.quarantined == str(moved)
    assert (result.stored, stats.pending) == (1, 1)
    # The fresh outbox never hands out a seq the old one may have used (outbox_guard.py).
    assert stats.last_seq > handed_out
    assert stats.data_loss is not None
    assert "corrupt" in stats.data_loss
    assert {r.levelname for r in caplog.records} == {"CRITICAL"}
    assert "corrupt" in caplog.records[0].getMessage()


async def test_a_sound_database_is_not_quarantined(tmp_path: Path) -> None:
    await _populated(tmp_path / "outbox.db", n=3)
    outbox = await Outbox.open(tmp_path / "outbox.db")
    stats = await outbox.stats()
    await outbox.close()
    assert outbox.quarantined is None
    assert stats.quarantined is None
    assert stats.pending == 4


async def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OutboxError, match="does its directory exist"):
        await Outbox.open(tmp_path / "no-such-dir" / "outbox.db")
