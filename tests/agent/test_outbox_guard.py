"""The seq guard: a lost WAL or a replaced database never makes the outbox reuse a seq."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent import outbox_store
from agent.outbox import Outbox
from agent.outbox_guard import RESERVE_BLOCK, guard_path, read_guard
from tests.agent.test_outbox_factory import stream_sample


async def _capture(db: Path, start: int, n: int, crash_image: Path | None = None) -> int:
    """Capture n readings; optionally copy every file as a crash would leave them."""
    outbox = await Outbox.open(db, group_commit_s=0)
    await outbox.capture([stream_sample(i) for i in range(start, start + n)])
    last = (await outbox.stats()).last_seq
    if crash_image is not None:
        for suffix in ("", "-wal", "-shm", ".seq"):
            shutil.copyfile(f"{db}{suffix}", f"{crash_image}{suffix}")
    await outbox.close()
    return last


async def _reopen(db: Path) -> tuple[str | None, int]:
    outbox = await Outbox.open(db)
    try:
        stats = await outbox.stats()
        return stats.data_loss, stats.last_seq
    finally:
        await outbox.close()


async def test_a_clean_restart_continues_without_a_gap(tmp_path: Path) -> None:
    db = tmp_path / "outbox.db"
    last = await _capture(db, 0, 20)
    guard = read_guard(db)
    assert guard is not None
    assert guard.clean
    assert guard.reserved_seq >= last
    assert await _reopen(db) == (None, last)


async def test_a_crash_with_its_wal_continues_without_a_gap(tmp_path: Path) -> None:
    image = tmp_path / "crashed.db"
    last = await _capture(tmp_path / "outbox.db", 0, 20, crash_image=image)
    assert not read_guard(image).clean  # type: ignore[union-attr]
    assert await _reopen(image) == (None, last)


async def test_a_lost_wal_is_reported_and_seq_jumps_past_every_used_one(tmp_path: Path) -> None:
    image = tmp_path / "crashed.db"
    last = await _capture(tmp_path / "outbox.db", 0, 20, crash_image=image)
    image.with_name(image.name + "-wal").unlink()
    loss, resumed_at = await _reopen(image)
    assert loss is not None
    assert "write-ahead log" in loss
    assert resumed_at > last


async def test_an_older_copy_put_back_after_a_clean_stop_is_reported(tmp_path: Path) -> None:
    # A technician restores yesterday's outbox file over today's (clean stops both): the
    # readings numbered since are gone from it, and the next seq must not reuse theirs.
    db = tmp_path / "outbox.db"
    await _capture(db, 0, 5)
    shutil.copyfile(db, tmp_path / "yesterday.db")
    last = await _capture(db, 5, 5)
    shutil.copyfile(tmp_path / "yesterday.db", db)
    loss, resumed_at = await _reopen(db)
    assert loss is not None
    assert "fewer readings" in loss
    assert resumed_at >= last


async def test_a_guard_written_by_the_previous_version_is_still_understood(
    tmp_path: Path,
) -> None:
    db = tmp_path / "outbox.db"
    last = await _capture(db, 0, 5)
    guard_path(db).write_text(f'{{"v": 1, "reserved_seq": {last + RESERVE_BLOCK}, "clean": true}}')
    guard = read_guard(db)
    assert guard is not None
    assert guard.committed_seq == last
    assert await _reopen(db) == (None, last)


async def test_the_reservation_moves_ahead_of_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_store, "RESERVE_BLOCK", 10)
    db = tmp_path / "outbox.db"
    outbox = await Outbox.open(db, group_commit_s=0)
    for start in range(0, 45, 5):
        await outbox.capture([stream_sample(i) for i in range(start, start + 5)])
        guard = read_guard(db)
        assert guard is not None
        assert guard.reserved_seq >= (await outbox.stats()).last_seq
    await outbox.close()
    assert guard_path(db).exists()


async def test_many_clean_restarts_with_few_readings_raise_no_false_alarm(tmp_path: Path) -> None:
    # A hub restarted every day with a handful of readings in between: the reservation
    # must not climb a block per start until it looks like lost rows (it did every 3rd).
    db = tmp_path / "outbox.db"
    last = 0
    for day in range(6):
        last = await _capture(db, day * 3, 3)
        assert await _reopen(db) == (None, last)
    assert last == 18  # and no seq was skipped


async def test_repeated_crashes_with_their_wal_raise_no_false_alarm(tmp_path: Path) -> None:
    db = tmp_path / "outbox.db"
    for crash in range(5):
        image = tmp_path / f"crash{crash}.db"
        last = await _capture(db, crash * 3, 3, crash_image=image)
        assert not read_guard(image).clean  # type: ignore[union-attr]
        assert await _reopen(image) == (None, last)
        db = image  # the next run starts from what the crash left
