"""Compact JSON payloads: golden per kind, JSON Schema, round trip, size budget."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no types-jsonschema installed
import pytest

from agent.clock import TimeSource
from agent.payloads import decode_payload, encode_batch
from agent.payloads.compact import SCHEMA_PATH, decode_compact
from agent.readings import Kind, PatientBinding, Quantity
from tests.payloads.factory import (
    CONTEXT,
    RECEIVED_UTC,
    hub_time,
    reading_of,
    spo2_stream,
    stored,
)
from tests.payloads.golden import assert_matches_golden

Json = dict[str, Any]
VALIDATOR = jsonschema.Draft202012Validator(
    json.loads(SCHEMA_PATH.read_text(encoding="utf-8")),
    format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
)


def compact_for(batch: list[Any], now: Any = None) -> Json:
    encoded = encode_batch(batch, now or hub_time(), fmt="compact", context=CONTEXT)
    document = decode_payload(encoded)
    assert isinstance(document, dict)
    VALIDATOR.validate(document)
    return document


@pytest.mark.parametrize("kind", list(Kind))
def test_golden_compact_per_kind(kind: Kind) -> None:
    assert_matches_golden(f"compact_{kind.value}", compact_for([stored(reading_of(kind))]))


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(VALIDATOR.schema)


def test_schema_rejects_a_broken_document() -> None:
    document = compact_for([stored(reading_of(Kind.GLUCOSE))])
    document["cx"][0]["ts"] = 7  # no such time source
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate(document)
    del document["pt"]
    assert not VALIDATOR.is_valid(document)


def test_mixed_batch_round_trips_every_field_the_backend_needs() -> None:
    readings = [reading_of(kind) for kind in Kind]
    batch = [stored(r, 300 + i) for i, r in enumerate(readings)]
    rows = decode_compact(compact_for(batch))
    assert len(rows) == len(readings)
    for row, reading, item in zip(rows, readings, batch, strict=True):
        assert row["reading_id"] == reading.reading_id
        assert row["seq"] == item.seq
        assert (row["patient_id"], row["binding_version"]) == ("patient-0042", 3)
        assert row["device"]["id"] == reading.device.device_id
        assert row["device"]["drv"] == reading.device.driver
        assert row["kind"] == reading.kind.value
        assert row["values"] == {q.name: q.value for q in reading.values}
        assert row["units"] == {q.name: q.unit for q in reading.values}
        assert row["effective_time"] == reading.effective_time
        assert row["time_source"] is reading.time_source
        assert row["receipt_time"] == reading.received.utc
        assert row.get("dt") == reading.device_time
        assert row.get("dq") == reading.device_seq
        assert row.get("ms", []) == list(reading.status)


def test_special_value_is_named_never_a_number() -> None:
    reading = reading_of(
        Kind.BODY_TEMPERATURE, values=(Quantity("body_temperature", None, "Cel", "nres"),)
    )
    (row,) = decode_compact(compact_for([stored(reading)]))
    assert row["values"] == {"body_temperature": "nres"}


def test_spo2_stream_of_60_fits_60_bytes_per_reading() -> None:
    encoded = encode_batch(spo2_stream(60), hub_time(), fmt="compact", context=CONTEXT)
    assert len(encoded.payload) / 60 <= 60


def test_serial_stream_with_status_and_extras_still_fits_60_bytes_per_reading() -> None:
    # As the Nonin serial driver emits them: status flags and extras on every sample.
    batch = spo2_stream(
        60, status=("marginal_perfusion",), extra={"protocol": "nonin_df7", "samples": "3"}
    )
    encoded = encode_batch(batch, hub_time(), fmt="compact", context=CONTEXT)
    assert len(encoded.payload) / 60 <= 60
    document = compact_for(batch)
    assert document["cx"] == [
        {
            "s": 0,
            "ts": 2,
            "ms": ["marginal_perfusion"],
            "ex": {"protocol": "nonin_df7", "samples": "3"},
        }
    ]
    rows = decode_compact(document)
    assert all(row["ms"] == ["marginal_perfusion"] for row in rows)
    assert all(row["ex"] == {"protocol": "nonin_df7", "samples": "3"} for row in rows)


def test_unsynced_reading_keeps_monotonic_time_and_boot_until_restamped() -> None:
    captured = hub_time(RECEIVED_UTC.replace(year=1970), mono_ns=2 * 10**9, synced=False)
    reading = reading_of(Kind.SPO2, received=captured)
    still_unsynced = hub_time(RECEIVED_UTC.replace(year=1970), mono_ns=3 * 10**9, synced=False)
    (row,) = decode_compact(compact_for([stored(reading)], now=still_unsynced))
    assert row["mono"] == 2 * 10**9
    assert row["boot"] == captured.boot_id
    assert row["tf"] == ["hub_clock_unsynced"]
    synced = hub_time(RECEIVED_UTC, mono_ns=62 * 10**9)
    (row,) = decode_compact(compact_for([stored(reading)], now=synced))
    assert row["tf"] == ["hub_clock_unsynced", "restamped"]
    assert row["effective_time"] == RECEIVED_UTC - timedelta(seconds=60)
    assert row["time_source"] is TimeSource.HUB_RECEIPT
    assert "mono" not in row


def test_rebinding_within_a_batch_keeps_each_reading_with_its_patient() -> None:
    first = reading_of(Kind.GLUCOSE)
    other = dataclasses.replace(
        reading_of(Kind.GLUCOSE, number=1), patient=PatientBinding("patient-0099", 1)
    )
    rows = decode_compact(compact_for([stored(first, 1), stored(other, 2)]))
    assert [(r["patient_id"], r["binding_version"]) for r in rows] == [
        ("patient-0042", 3),
        ("patient-0099", 1),
    ]
