"""The publisher's side of the outbox: raw pending rows, the body layout, state changes by seq.

The publish path reads rows undecoded (``pending_rows``) and the payload encoders read
the stored bodies through ``body_fields``; PUBACKs are recorded one statement per run
of seqs. These pin what that must never change: the rows and readings are the same as
the decoded read, the body layout is version 1 until a migration says otherwise, and a
state change by seq touches only the rows named that are still in the expected state.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from agent.clock import HubTime, TimeSource
from agent.outbox import Outbox
from agent.outbox_codec import BODY_LAYOUT, body_fields, decode_pending, encode_body
from agent.readings import Quantity
from tests.agent.test_outbox_factory import OXIMETER, bp_record, stream_sample

if TYPE_CHECKING:
    from pathlib import Path


async def test_pending_rows_decode_to_exactly_what_pending_batch_returns(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db")
    other_device = replace(OXIMETER, device_id="oxi-2")
    readings = [stream_sample(i) for i in range(4)] + [bp_record(1), bp_record(2)]
    readings.append(replace(stream_sample(9), device=other_device))
    await outbox.capture(readings)
    await outbox.mark_sent([2])

    page = await outbox.pending_rows(after_seq=1, limit=4)
    decoded = await outbox.pending_batch(after_seq=1, limit=4)
    everything = await outbox.pending_rows(limit=100)
    await outbox.close()

    assert [row[0] for row in page.rows] == [3, 4, 5, 6]
    assert decode_pending(page.rows, page.contexts) == decoded
    # Only the contexts the page's rows name come with it.
    assert set(page.contexts) == {row[3] for row in page.rows}
    assert len({row[3] for row in everything.rows}) == 3  # two oximeters and the cuff
    by_seq = {
        stored.seq: stored.reading
        for stored in decode_pending(everything.rows, everything.contexts)
    }
    assert by_seq == {seq: r for seq, r in enumerate(readings, start=1) if seq != 2}


def test_body_layout_1_is_pinned() -> None:
    # If this fails, the stored body layout changed: bump BODY_LAYOUT and add an outbox
    # migration that rewrites stored bodies; readers (payload encoders) rely on it.
    moment = datetime(2026, 11, 27, 9, 30, 15, 250_000, tzinfo=UTC)
    received = HubTime(utc=moment, monotonic_ns=7, boot_id="boot", clock_synced=True)
    reading = replace(
        bp_record(3),
        reading_id=uuid.UUID(int=1),
        received=received,
        effective_time=datetime(2026, 11, 27, 9, 28, tzinfo=UTC),
        time_source=TimeSource.DEVICE,
        natural_key="cuff:blood_pressure:key",
        device_time="2026-11-27T09:28:00",
        device_seq=None,
        device_clock_offset_s=3.0,
        time_flags=("flag",),
        status=("irregular_pulse",),
        extra={"k": "v"},
        values=(
            Quantity("systolic", 128.0, "mm[Hg]"),
            Quantity("pulse_rate", None, "/min", "nres"),
        ),
    )
    body = encode_body(reading)
    assert BODY_LAYOUT == 1
    assert body == (
        '["blood_pressure",[["systolic",128.0,"mm[Hg]",null],["pulse_rate",null,"/min","nres"]],'
        '1795771815250000,7,true,"device",1795771680000000,"cuff:blood_pressure:key",'
        '"2026-11-27T09:28:00",null,3.0,["flag"],["irregular_pulse"],{"k":"v"}]'
    )
    fields = body_fields(body)
    assert fields.kind == "blood_pressure"
    assert fields.received == 1795771815250000
    assert fields.effective == 1795771680000000
    assert fields.device_clock_offset_s == 3.0
    assert fields.extra == {"k": "v"}
    # A plain stream sample stores no tail at all; the defaults fill it in.
    plain = body_fields('["spo2",[["spo2",97.0,"%",null]],1,2,false,"hub_receipt"]')
    assert (plain.effective, plain.natural_key, plain.time_flags, plain.extra) == (
        None,
        None,
        [],
        {},
    )


@pytest.mark.parametrize(
    "body",
    [
        "",
        "[",
        "{}",
        '["spo2"]',
        '["spo2",[],1,2,true,"hub_receipt"] trailing',
        "[" + "0," * 14 + "0]",
    ],
)
def test_a_body_of_another_layout_is_refused_clearly(body: str) -> None:
    with pytest.raises(ValueError, match=r"layout|Expecting"):
        body_fields(body)


async def test_mark_sent_by_runs_and_lone_seqs_touches_only_the_named_pending_rows(
    tmp_path: Path,
) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db", receipts=True)
    await outbox.capture([stream_sample(i) for i in range(12)])
    await outbox.mark_rejected([3], "0x87 Not authorized")
    # Runs 1-4 and 6-7 (with 3 rejected inside the first), lone 9 and 12, a repeat,
    # out of order as PUBACKs may be gathered; 5, 8, 10 and 11 were not acknowledged.
    await outbox.mark_sent([7, 6, 1, 2, 3, 4, 12, 9, 2])

    sent = [r.seq for r in await outbox.list_readings(state="sent")]
    pending = [r.seq for r in await outbox.pending_batch(limit=100)]
    rejected = [r.seq for r in await outbox.list_readings(state="rejected")]
    stats = await outbox.stats()
    await outbox.close()

    assert sent == [1, 2, 4, 6, 7, 9, 12]
    assert pending == [5, 8, 10, 11]
    assert rejected == [3]  # a late PUBACK never overrides a rejection
    assert (stats.pending, stats.sent, stats.rejected) == (4, 7, 1)


async def test_reject_and_requeue_by_seq_groups(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db")
    await outbox.capture([stream_sample(i) for i in range(8)])
    await outbox.mark_rejected([2, 3, 4, 7], "0x97 Quota exceeded")
    await outbox.mark_sent([1])
    requeued = await outbox.requeue_rejected([1, 3, 4, 7, 8])  # 1 is sent, 8 pending: untouched

    rejected = await outbox.list_readings(state="rejected")
    pending = [r.seq for r in await outbox.pending_batch(limit=100)]
    stats = await outbox.stats()
    await outbox.close()

    assert requeued == 3
    assert [(r.seq, r.reject_reason) for r in rejected] == [(2, "0x97 Quota exceeded")]
    assert pending == [3, 4, 5, 6, 7, 8]
    assert (stats.pending, stats.sent, stats.rejected) == (6, 1, 1)
