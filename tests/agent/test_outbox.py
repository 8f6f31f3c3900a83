"""Outbox behaviour on real SQLite files: capture, dedup, states, purge, group commit."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import pytest

from agent.errors import OutboxError
from agent.outbox import Outbox, open_readonly
from agent.readings import Quantity
from tests.agent.test_outbox_factory import T0, StepClock, bp_record, stream_sample

if TYPE_CHECKING:
    from pathlib import Path

WEEK_S = 7 * 86400


async def test_readings_come_back_exactly_as_captured(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db")
    readings = [stream_sample(0), bp_record(1), stream_sample(1, spo2=91.0), bp_record(2)]
    result = await outbox.capture(readings)
    await outbox.close()

    reopened = await Outbox.open(tmp_path / "outbox.db")
    rows = await reopened.pending_batch()
    await reopened.close()
    assert (result.stored, result.duplicates) == (4, 0)
    assert [row.reading for row in rows] == readings
    assert [row.seq for row in rows] == [1, 2, 3, 4]
    assert {row.state for row in rows} == {"pending"}


async def test_resent_device_record_is_a_duplicate_within_a_batch_and_across_reopen(
    tmp_path: Path,
) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db")
    first = await outbox.capture([bp_record(1), bp_record(1, offset_s=5), bp_record(2)])
    await outbox.close()

    # The cuff re-sends its stored records on the next connection (new reading_ids).
    reopened = await Outbox.open(tmp_path / "outbox.db")
    again = await reopened.capture([bp_record(1, offset_s=600), bp_record(3, offset_s=600)])
    same_object = stream_sample(7)
    repeat = await reopened.capture([same_object, same_object])
    stats = await reopened.stats()
    rows = await reopened.pending_batch()
    await reopened.close()

    assert (first.stored, first.duplicates) == (2, 1)
    assert (again.stored, again.duplicates) == (1, 1)
    assert (repeat.stored, repeat.duplicates) == (1, 1)
    assert stats.duplicates_total == 2  # since this open
    # A refused duplicate never uses up a seq (the backend would see a gap).
    assert [row.seq for row in rows] == [1, 2, 3, 4]
    assert stats.last_seq == 4


async def test_a_different_value_at_the_same_device_time_is_a_new_reading(
    tmp_path: Path,
) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db")
    result = await outbox.capture([bp_record(1, systolic=128.0), bp_record(1, systolic=131.0)])
    await outbox.close()
    assert (result.stored, result.duplicates) == (2, 0)


async def test_state_transitions_and_pending_batch_paging(tmp_path: Path) -> None:
    clock = StepClock()
    outbox = await Outbox.open(tmp_path / "outbox.db", clock=clock, receipts=True)
    readings = [stream_sample(i) for i in range(6)]
    await outbox.capture(readings)

    page = await outbox.pending_batch(after_seq=2, limit=2)
    assert [row.seq for row in page] == [3, 4]
    await outbox.mark_sent([1, 2])
    await outbox.mark_rejected([3], "0x87 Not authorized")
    await outbox.mark_sent([3])  # a late PUBACK never overrides a rejection
    delivered = await outbox.mark_delivered([readings[0].reading_id, readings[4].reading_id])

    assert delivered == 1  # reading 5 is still pending: a receipt cannot skip PUBACK
    assert [r.seq for r in await outbox.pending_batch()] == [4, 5, 6]
    rejected = await outbox.list_readings(state="rejected")
    assert [(r.seq, r.reject_reason) for r in rejected] == [(3, "0x87 Not authorized")]
    assert [r.seq for r in await outbox.list_readings(state="sent")] == [2]
    assert [r.seq for r in await outbox.list_readings(state="delivered")] == [1]
    stats = await outbox.stats()
    assert (stats.pending, stats.sent, stats.delivered, stats.rejected) == (3, 1, 1, 1)
    assert stats.oldest_pending_seq == 4
    assert stats.oldest_pending_received_at == readings[3].received.utc

    assert await outbox.requeue_rejected() == 1
    assert [r.seq for r in await outbox.pending_batch()] == [3, 4, 5, 6]
    assert (await outbox.pending_batch())[0].reject_reason is None
    await outbox.close()


async def test_requeue_selected_rejected_rows(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db")
    await outbox.capture([stream_sample(i) for i in range(3)])
    await outbox.mark_rejected([1, 2, 3], "0x97 Quota exceeded")
    assert await outbox.requeue_rejected([2, 99]) == 1
    assert [r.seq for r in await outbox.list_readings(state="rejected")] == [1, 3]
    await outbox.close()


async def test_unknown_state_name_is_a_clear_error(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db")
    with pytest.raises(ValueError, match="state must be one of"):
        await outbox.list_readings(state="acked")
    await outbox.close()


async def test_purge_without_receipts_deletes_only_old_sent_rows(tmp_path: Path) -> None:
    clock = StepClock()
    outbox = await Outbox.open(tmp_path / "outbox.db", clock=clock, audit_window_s=WEEK_S)
    await outbox.capture([stream_sample(i) for i in range(5)])
    await outbox.mark_sent([1, 2])
    await outbox.mark_rejected([3], "0x87 Not authorized")
    clock.advance(3 * 86400)
    await outbox.mark_sent([4])

    assert await outbox.purge(T0 + timedelta(days=6)) == 0
    assert await outbox.purge(T0 + timedelta(days=8)) == 2  # seq 1, 2: sent 8 days ago
    # A year later: seq 4 goes, the rejected and the pending row never do.
    assert await outbox.purge(T0 + timedelta(days=365)) == 1
    stats = await outbox.stats()
    assert (stats.pending, stats.rejected, stats.sent) == (1, 1, 0)
    assert [r.seq for r in await outbox.list_readings(state="rejected")] == [3]
    await outbox.close()


async def test_purge_with_receipts_keeps_sent_rows_until_delivered(tmp_path: Path) -> None:
    clock = StepClock()
    outbox = await Outbox.open(tmp_path / "outbox.db", clock=clock, receipts=True)
    readings = [stream_sample(i) for i in range(3)]
    await outbox.capture(readings)
    await outbox.mark_sent([1, 2, 3])
    assert await outbox.mark_delivered([readings[1].reading_id]) == 1

    assert await outbox.purge(T0 + timedelta(days=365)) == 1
    assert [r.seq for r in await outbox.list_readings(state="sent")] == [1, 3]
    await outbox.close()


async def test_seq_is_never_reused_after_purge_and_restart(tmp_path: Path) -> None:
    clock = StepClock()
    outbox = await Outbox.open(tmp_path / "outbox.db", clock=clock)
    await outbox.capture([stream_sample(i) for i in range(3)])
    await outbox.mark_sent([1, 2, 3])
    assert await outbox.purge(T0 + timedelta(days=30)) == 3
    await outbox.close()

    reopened = await Outbox.open(tmp_path / "outbox.db", clock=clock)
    await reopened.capture([stream_sample(10)])
    rows = await reopened.pending_batch()
    assert [r.seq for r in rows] == [4]
    assert (await reopened.stats()).last_seq == 4
    await reopened.close()


async def test_concurrent_captures_share_commits(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db", group_commit_s=0.05)
    before = (await outbox.stats()).commits
    results = await asyncio.gather(*(outbox.capture([stream_sample(i)]) for i in range(50)))
    commits = (await outbox.stats()).commits - before
    await outbox.close()
    assert all(r.stored == 1 for r in results)
    # 50 callers, one linger window: one COMMIT (two if the loop was slow to schedule).
    assert commits <= 2

    conn = open_readonly(tmp_path / "outbox.db")
    count = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    conn.close()
    assert count == 50


async def test_without_linger_captures_still_group_behind_a_running_commit(
    tmp_path: Path,
) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db", group_commit_s=0.0)
    before = (await outbox.stats()).commits
    await asyncio.gather(*(outbox.capture([stream_sample(i)]) for i in range(200)))
    commits = (await outbox.stats()).commits - before
    await outbox.close()
    assert commits < 200


async def test_closed_outbox_refuses_captures_and_close_is_idempotent(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db")
    await outbox.close()
    await outbox.close()
    with pytest.raises(OutboxError, match="closed"):
        await outbox.capture([stream_sample()])
    # Closing checkpointed the WAL into the main file.
    wal = tmp_path / "outbox.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0


async def test_empty_capture_stores_nothing(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db")
    result = await outbox.capture([])
    stats = await outbox.stats()
    await outbox.close()
    assert (result.stored, result.duplicates, stats.last_seq) == (0, 0, 0)


async def test_open_readonly_sees_rows_without_blocking_the_agent(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db")
    await outbox.capture([stream_sample(0)])
    conn = open_readonly(tmp_path / "outbox.db")
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM readings").fetchone()
    await outbox.capture([stream_sample(1)])  # a reader never blocks the writer in WAL
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM readings")
    conn.close()
    await outbox.close()
    with pytest.raises(OutboxError, match="no outbox database"):
        open_readonly(tmp_path / "missing.db")


async def test_unusual_times_and_specials_round_trip_exactly(tmp_path: Path) -> None:
    plus_one = timezone(timedelta(hours=1))
    base = bp_record(5)
    odd = replace(
        base,
        reading_id=uuid.uuid4(),
        natural_key="bp-cuff:blood_pressure:custom-key",
        effective_time=datetime(2026, 11, 27, 9, 0, 0, 123456, tzinfo=plus_one),
        received=replace(base.received, utc=base.received.utc.astimezone(plus_one)),
        device_seq=0,
        device_clock_offset_s=-1.5,
        values=(Quantity("glucose", float("nan"), "mmol/L"), Quantity("pulse_rate", None, "/min")),
    )
    outbox = await Outbox.open(tmp_path / "outbox.db")
    await outbox.capture([odd])
    (row,) = await outbox.pending_batch()
    await outbox.close()
    back = row.reading
    assert back.effective_time.isoformat() == odd.effective_time.isoformat()
    assert back.received.utc.isoformat() == odd.received.utc.isoformat()
    assert (back.natural_key, back.device_seq, back.device_clock_offset_s) == (
        odd.natural_key,
        0,
        -1.5,
    )
    assert back.values[1] == odd.values[1]
    assert back.values[0].value != back.values[0].value  # NaN stays NaN
    assert replace(back, values=()) == replace(odd, values=())


async def test_the_same_record_from_two_callers_in_one_commit_is_stored_once(
    tmp_path: Path,
) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db", group_commit_s=0.05)
    first, second = await asyncio.gather(
        outbox.capture([bp_record(9)]), outbox.capture([bp_record(9, offset_s=1)])
    )
    stats = await outbox.stats()
    await outbox.close()
    assert ((first.stored, first.duplicates), (second.stored, second.duplicates)) == (
        (1, 0),
        (0, 1),
    )
    assert (stats.commits, stats.pending, stats.last_seq) == (1, 1, 1)


async def test_empty_state_changes_commit_nothing_and_naive_purge_time_is_refused(
    tmp_path: Path,
) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db")
    await outbox.capture([stream_sample(0)])
    before = (await outbox.stats()).commits
    await outbox.mark_sent([])
    await outbox.mark_rejected([], "0x87 Not authorized")
    assert await outbox.mark_delivered([]) == 0
    assert await outbox.requeue_rejected([]) == 0
    assert (await outbox.stats()).commits == before
    with pytest.raises(ValueError, match="timezone-aware"):
        await outbox.purge(datetime(2026, 12, 1))  # noqa: DTZ001
    assert (await outbox.stats()).pending == 1
    await outbox.close()
