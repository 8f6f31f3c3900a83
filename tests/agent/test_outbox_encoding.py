"""The outbox's fast capture path stores exactly what the general (json module) path would.

A stream sample is encoded by hand-built JSON and inserted by one statement per table per
group commit; these tests pin that it round-trips, that its bytes on disk equal the
reference encoding (so files written before the fast path still read the same), and
that concurrent captures sharing one COMMIT still get their own results.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from dataclasses import replace
from datetime import UTC, timedelta, timezone
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.errors import OutboxError
from agent.outbox import Outbox
from agent.outbox_codec import (
    CADENCE_CODES,
    context_of,
    decode_context,
    decode_reading,
    encode_context,
    encode_reading,
    encode_reading_general,
)
from agent.outbox_store import OutboxStore
from agent.readings import Cadence, DeviceIdentity, Kind, Quantity, Reading
from tests.agent.test_outbox_factory import OXIMETER, PATIENT, bp_record, stream_sample

if TYPE_CHECKING:
    from pathlib import Path

_TEXT = st.text(max_size=12)  # any code point: non-ASCII must come out escaped
_NUMBER = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.booleans(),
)
_QUANTITY = st.builds(Quantity, _TEXT, _NUMBER, _TEXT, st.one_of(st.none(), _TEXT))


@st.composite
def _samples(draw: st.DrawFn) -> Reading:
    """Stream samples, mostly plain (the fast path), some with one thing unusual."""
    base = stream_sample(draw(st.integers(min_value=0, max_value=10**6)))
    reading = replace(
        base,
        kind=draw(st.sampled_from(Kind)),
        cadence=draw(st.sampled_from(Cadence)),
        values=tuple(draw(st.lists(_QUANTITY, max_size=3))),
        received=replace(
            base.received,
            monotonic_ns=draw(st.integers(min_value=0, max_value=2**63)),
            clock_synced=draw(st.booleans()),
        ),
    )
    reading = replace(
        reading, natural_key=f"{reading.device.device_id}:{reading.kind}:id:{reading.reading_id}"
    )
    unusual = draw(st.sampled_from(["none", "key", "zone", "effective", "status", "extra"]))
    if unusual == "key":
        reading = replace(reading, natural_key=draw(_TEXT))
    elif unusual == "zone":
        zone = timezone(timedelta(minutes=draw(st.integers(min_value=-600, max_value=600))))
        utc = reading.received.utc.astimezone(zone)
        reading = replace(reading, received=replace(reading.received, utc=utc), effective_time=utc)
    elif unusual == "effective":
        reading = replace(reading, effective_time=reading.received.utc + timedelta(seconds=1))
    elif unusual == "status":
        reading = replace(reading, status=(draw(_TEXT),))
    elif unusual == "extra":
        reading = replace(reading, extra={draw(_TEXT): draw(_TEXT)})
    return reading


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_samples())
def test_fast_encoding_equals_the_reference_and_round_trips(reading: Reading) -> None:
    context = encode_context(context_of(reading))
    fast = encode_reading(reading, context)
    assert fast == encode_reading_general(reading, context)
    back = decode_reading(fast.reading_id, fast.cadence, decode_context(context), fast.body)
    if all(q.value == q.value for q in reading.values):  # NaN never equals itself
        assert back == reading


def test_cadence_codes_fit_the_one_bit_the_store_packs_them_in() -> None:
    assert sorted(CADENCE_CODES.values()) == [0, 1]


async def test_a_mixed_group_is_stored_exactly_as_the_reference_encoding(tmp_path: Path) -> None:
    # Two devices (two contexts), both cadences, bodies of very different widths
    # (including escaped non-ASCII text) and state changes, all in one group commit.
    other = DeviceIdentity(device_id="oximeter-2", driver="nonin3150", model="Ωx 3150")
    first = [stream_sample(0), stream_sample(1)]
    outbox = await Outbox.open(tmp_path / "outbox.db", group_commit_s=0.05)
    await outbox.capture(first)
    odd = replace(bp_record(3), extra={"note": "café ☕ " * 20})
    second = replace(stream_sample(2), device=other)
    second = replace(second, natural_key=f"oximeter-2:spo2:id:{second.reading_id}")
    batch = [second, odd, replace(stream_sample(3), cadence=Cadence.SPOT), stream_sample(4)]
    before = (await outbox.stats()).commits
    results = await asyncio.gather(
        outbox.mark_sent([1]),
        outbox.capture(batch[:2]),
        outbox.mark_rejected([2], "0x97 Quota exceeded"),
        outbox.capture(batch[2:]),
    )
    stats = await outbox.stats()
    pending = await outbox.pending_batch()
    await outbox.close()

    assert stats.commits == before + 1  # all four writes shared one COMMIT
    assert [(r.stored, r.duplicates) for r in (results[1], results[3])] == [(2, 0), (2, 0)]
    assert [row.seq for row in pending] == [3, 4, 5, 6]
    assert [row.reading for row in pending] == batch
    assert (stats.sent, stats.rejected, stats.pending) == (1, 1, 4)
    with sqlite3.connect(tmp_path / "outbox.db") as conn:
        stored = conn.execute(
            "SELECT b.seq, typeof(b.body), b.body, b.natural_key, r.reading_id, r.cadence, "
            "c.body FROM bodies AS b JOIN readings AS r USING (seq) "
            "JOIN contexts AS c ON c.id = r.context ORDER BY seq"
        ).fetchall()
    conn.close()
    for (seq, kind, body, key, rid, cadence, context), reading in zip(
        stored, first + batch, strict=True
    ):
        reference = encode_reading_general(reading, encode_context(context_of(reading)))
        assert (kind, body, key, rid, cadence, context) == (
            "text",
            reference.body,
            reference.natural_key_hash,
            reference.reading_id,
            reference.cadence,
            reference.context_json,
        ), seq


async def test_duplicates_in_one_shared_commit_are_counted_per_caller_without_seq_gaps(
    tmp_path: Path,
) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db", group_commit_s=0.05)
    await outbox.capture([bp_record(1)])
    again = stream_sample(5)
    results = await asyncio.gather(
        outbox.capture([stream_sample(6), stream_sample(7)]),
        outbox.capture([bp_record(1, offset_s=60), bp_record(2), again]),  # cuff re-sent #1
        outbox.capture([again, stream_sample(8)]),  # the same object from two callers
    )
    stats = await outbox.stats()
    rows = await outbox.pending_batch()
    await outbox.close()

    assert [(r.stored, r.duplicates) for r in results] == [(2, 0), (2, 1), (1, 1)]
    assert [row.seq for row in rows] == [1, 2, 3, 4, 5, 6]
    assert stats.last_seq == 6
    assert stats.duplicates_total == 2
    assert len({row.reading.reading_id for row in rows}) == 6


async def test_a_reading_id_is_kept_whole_whatever_its_bytes(tmp_path: Path) -> None:
    # Ids full of zero and 0xff bytes, sliced out of one packed blob by SQLite.
    readings = [
        replace(stream_sample(i), reading_id=uuid.UUID(bytes=bytes([fill]) * 16))
        for i, fill in enumerate((0x00, 0xFF, 0x20))
    ]
    readings = [
        replace(r, natural_key=f"{OXIMETER.device_id}:spo2:id:{r.reading_id}") for r in readings
    ]
    outbox = await Outbox.open(tmp_path / "outbox.db")
    await outbox.capture(readings)
    rows = await outbox.list_readings(state="pending")
    await outbox.close()
    assert [row.reading for row in rows] == readings
    assert {row.reading.patient for row in rows} == {PATIENT}
    assert all(row.reading.received.utc.tzinfo == UTC for row in rows)


def test_a_malformed_row_fails_its_group_alone_and_the_store_keeps_working(
    tmp_path: Path,
) -> None:
    store = OutboxStore.open(tmp_path / "outbox.db", capacity_readings=100, receipts=False)
    try:
        sample, other = stream_sample(0), stream_sample(1)
        context = encode_context(context_of(sample))
        good, bad = encode_reading(sample, context), encode_reading(other, context)
        with pytest.raises(OutboxError, match="not 16 bytes"):
            store.apply([[good], [bad._replace(reading_id=b"short")]])
        assert store.apply([[good]]) == [(1, 0)]  # no transaction was left open
        rows = store.select(0, 0, 10)
    finally:
        store.close()
    assert [(row.seq, row.reading) for row in rows] == [(1, sample)]
