"""Property tests: any batch encodes to a valid document that gives back what went in."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from fhir.resources.R4B.bundle import Bundle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.clock import HubTime
from agent.payloads import decode_payload, encode_batch
from agent.payloads.compact import decode_compact
from agent.readings import QUANTITY_UNITS, Kind, Quantity, StoredReading
from tests.payloads.factory import BOOT, CONTEXT, reading_of, wall
from tests.payloads.test_compact import VALIDATOR

SPECIALS = ("nan", "nres", "+inf", "-inf", "reserved", "missing")
names = st.sampled_from(sorted(QUANTITY_UNITS))


@st.composite
def quantities(draw: st.DrawFn) -> Quantity:
    name = draw(names)
    unit = draw(st.sampled_from(sorted(QUANTITY_UNITS[name])))
    if draw(st.booleans()):
        return Quantity(name, None, unit, draw(st.sampled_from(SPECIALS)))
    value = draw(
        st.floats(min_value=-1000, max_value=1000, allow_nan=False).map(lambda v: round(v, 3))
    )
    return Quantity(name, value, unit)


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[StoredReading], HubTime]:
    base = datetime(2026, 10, 24, 23, 0, tzinfo=UTC)
    count = draw(st.integers(min_value=1, max_value=8))
    seqs = sorted(
        draw(st.sets(st.integers(min_value=1, max_value=10**6), min_size=count, max_size=count))
    )
    batch = []
    for number, seq in enumerate(seqs):
        synced = draw(st.booleans())
        offset_ms = draw(st.integers(min_value=0, max_value=6 * 3_600_000))
        received = HubTime(
            utc=base + timedelta(milliseconds=offset_ms)
            if synced
            else datetime(1970, 1, 1, tzinfo=UTC),
            monotonic_ns=10**9 + offset_ms * 10**6,
            boot_id=draw(st.sampled_from([BOOT, "another-boot"])),
            clock_synced=synced,
        )
        device_time = draw(
            st.none() | st.datetimes(wall("1999-01-01T00:00:00"), wall("2027-01-01T00:00:00"))
        )
        reading = reading_of(
            draw(st.sampled_from(list(Kind))),
            number=number,
            received=received,
            values=tuple(draw(st.lists(quantities(), max_size=4, unique_by=lambda q: q.name))),
            device_time=device_time,
            device_clock_offset_s=draw(st.none() | st.floats(min_value=-1e5, max_value=1e5)),
            status=tuple(
                draw(st.lists(st.sampled_from(["a", "b_c", "low_perfusion"]), max_size=2))
            ),
        )
        batch.append(StoredReading(seq, reading, "pending"))
    now = HubTime(base + timedelta(hours=7), 10**9 + 7 * 3600 * 10**9, BOOT, draw(st.booleans()))
    return batch, now


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_compact_is_schema_valid_and_round_trips(case: tuple[list[StoredReading], HubTime]) -> None:
    batch, now = case
    document = decode_payload(encode_batch(batch, now, fmt="compact", context=CONTEXT))
    assert isinstance(document, dict)
    VALIDATOR.validate(document)
    for row, item in zip(decode_compact(document), batch, strict=True):
        reading = item.reading
        assert (row["reading_id"], row["seq"]) == (reading.reading_id, item.seq)
        assert row["values"] == {
            q.name: q.special if q.value is None else q.value for q in reading.values
        }
        if "restamped" not in row.get("tf", []) and row["time_source"] is reading.time_source:
            delta = abs(row["effective_time"] - reading.effective_time)
            assert delta < timedelta(milliseconds=1)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_fhir_bundle_always_validates(case: tuple[list[StoredReading], HubTime]) -> None:
    batch, now = case
    document = decode_payload(encode_batch(batch, now, fmt="fhir", context=CONTEXT))
    Bundle.model_validate(document)
    identifiers = [
        e["resource"]["identifier"][0]["value"]
        for e in document["entry"]  # type: ignore[index]
        if e["resource"]["resourceType"] == "Observation"
    ]
    assert len(identifiers) == len(set(identifiers))


def test_payload_builders_pull_in_no_io_libraries() -> None:
    code = (
        "import sys, json, agent.payloads; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'asyncio','bleak','serial','sqlite3','paho','socket'})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    )
    assert json.loads(result.stdout) == []
