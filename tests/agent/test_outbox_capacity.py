"""Bounded storage: who is removed when the outbox is full, and that it is all counted."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from agent.outbox import Outbox
from tests.agent.test_outbox_factory import StepClock, bp_record, stream_sample

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


async def test_sent_rows_go_first_then_continuous_is_thinned_before_any_spot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db", capacity_readings=12, clock=StepClock())
    spot = [bp_record(m) for m in range(4)]
    stream = [stream_sample(i) for i in range(8)]
    await outbox.capture(spot[:2] + stream + spot[2:])  # seq 1-2 spot, 3-10 stream, 11-12 spot
    await outbox.mark_sent([3])  # one stream sample already has its PUBACK

    with caplog.at_level(logging.WARNING, logger="agent.outbox"):
        await outbox.capture([stream_sample(100 + i) for i in range(4)])  # seq 13-16

    stats = await outbox.stats()
    kept = [r.seq for r in await outbox.list_readings(state="pending")]
    # Room for 4: the sent row (seq 3), then three continuous rows spread evenly over the
    # unsent continuous ones (5, 8, 13), never two neighbours; every spot reading stays.
    assert stats.audit_truncated == 1
    assert stats.evicted_by_cadence == {"continuous": 3, "spot": 0}
    assert stats.evicted_total == 3
    assert kept == [1, 2, 4, 6, 7, 9, 10, 11, 12, 14, 15, 16]
    assert (stats.pending, stats.sent) == (12, 0)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "evicted 3 continuous and 0 spot" in warnings[0].getMessage()
    assert "pt-" not in warnings[0].getMessage()  # counts only, no patient data
    await outbox.close()


async def test_spot_readings_are_dropped_only_when_no_continuous_row_is_left(
    tmp_path: Path,
) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db", capacity_readings=4)
    await outbox.capture([bp_record(0), stream_sample(0), bp_record(1), stream_sample(1)])
    await outbox.capture([bp_record(2), bp_record(3), bp_record(4)])

    kept = await outbox.list_readings(state="pending")
    stats = await outbox.stats()
    await outbox.close()
    # Both stream samples went first; then the oldest spot reading (seq 1).
    assert stats.evicted_by_cadence == {"continuous": 2, "spot": 1}
    assert [r.seq for r in kept] == [3, 5, 6, 7]
    assert all(r.reading.cadence == "spot" for r in kept)


async def test_rejected_rows_are_evicted_like_pending_ones_of_their_cadence(
    tmp_path: Path,
) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db", capacity_readings=3)
    await outbox.capture([bp_record(0), stream_sample(0)])
    await outbox.mark_rejected([1, 2], "0x87 Not authorized")
    await outbox.capture([bp_record(1)])
    await outbox.capture([bp_record(2)])

    stats = await outbox.stats()
    rejected = [r.seq for r in await outbox.list_readings(state="rejected")]
    await outbox.close()
    # The rejected continuous row made room; the rejected spot reading stays.
    assert rejected == [1]
    assert (stats.rejected, stats.pending, stats.evicted_total) == (1, 2, 1)
    assert stats.evicted_by_cadence == {"continuous": 1, "spot": 0}


async def test_eviction_counters_survive_a_restart(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db", capacity_readings=2)
    await outbox.capture([stream_sample(i) for i in range(3)])
    await outbox.capture([bp_record(0), bp_record(1), bp_record(2)])
    before = await outbox.stats()
    await outbox.close()

    reopened = await Outbox.open(tmp_path / "outbox.db", capacity_readings=2)
    after = await reopened.stats()
    await reopened.close()
    assert before.evicted_by_cadence == {"continuous": 3, "spot": 1}
    assert after.evicted_by_cadence == before.evicted_by_cadence
    assert after.evicted_total == 4
    assert after.pending == 2
    assert after.last_seq == 6  # evicted seqs are never handed out again


async def test_repeated_pressure_keeps_thinning_the_oldest_stream(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db", capacity_readings=16)
    await outbox.capture([stream_sample(i) for i in range(16)])
    for i in range(4):
        await outbox.capture([stream_sample(100 + 2 * i), stream_sample(101 + 2 * i)])
    kept = [r.seq for r in await outbox.pending_batch(limit=100)]
    await outbox.close()
    # The newest samples are all there; the first stretch keeps coverage from its start
    # to its end, at half the resolution (a plain FIFO would have kept only 9-16).
    assert len(kept) == 16
    assert kept[-8:] == list(range(17, 25))
    first_stretch = [seq for seq in kept if seq <= 16]
    assert len(first_stretch) == 8
    assert (first_stretch[0], first_stretch[-1]) == (1, 16)
