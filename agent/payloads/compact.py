"""Compact JSON batches for constrained links (format ``wardlink-compact`` version 1).

Pure: readings in, a JSON-ready dict out; ``decode_compact`` reverses it (the backend
and our tests use it). One envelope names the hub, the patients, the devices and the
"streams" (device + patient + kind + quantity names and units); each reading is then a
short array that points into those tables. compact.schema.json is the contract and
docs/payloads.md explains every field.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from agent.clock import RESTAMPED_FLAG, TimeSource
from agent.payloads.context import (
    PayloadContext,
    compact_number,
    epoch_ms,
    format_instant,
    published_time,
    uuid_base64url,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from agent.clock import HubTime, PublishedTime
    from agent.readings import Quantity, StoredReading

# The JSON Schema (draft 2020-12) of this format; shipped as package data.
SCHEMA_PATH: Final = Path(__file__).with_name("compact.schema.json")
FORMAT_NAME: Final = "wardlink-compact"
FORMAT_VERSION: Final = 1
# Time sources as one-digit codes (a row context's "ts").
SOURCE_CODES: Final = {
    TimeSource.DEVICE: 0,
    TimeSource.DEVICE_CORRECTED: 1,
    TimeSource.HUB_RECEIPT: 2,
}
_DEVICE_KEYS: Final = (
    ("id", "device_id"),
    ("drv", "driver"),
    ("addr", "address"),
    ("mfr", "manufacturer"),
    ("model", "model"),
    ("sn", "serial_number"),
    ("fw", "firmware"),
    ("sys", "system_id"),
)

Json = dict[str, Any]
# A row is [id, seq offset, context, effective ms, values], then optionally an object of
# the fields only that reading has.
_FIXED_FIELDS: Final = 5


class _Tables:
    """The envelope's lookup tables, filled as rows refer to them."""

    def __init__(self) -> None:
        self.patients: dict[tuple[str, int], int] = {}
        self.devices: dict[tuple[str | None, ...], int] = {}
        self.streams: dict[tuple[Any, ...], int] = {}
        self.contexts: dict[str, int] = {}
        self._context_list: list[Json] = []

    def stream_index(self, stored: StoredReading) -> int:
        """What a row's values mean: patient, device, kind, quantity names and units."""
        reading = stored.reading
        patient = (reading.patient.patient_id, reading.patient.binding_version)
        device = tuple(getattr(reading.device, attr) for _, attr in _DEVICE_KEYS)
        key = (
            self.patients.setdefault(patient, len(self.patients)),
            self.devices.setdefault(device, len(self.devices)),
            reading.kind.value,
            reading.cadence.value,
            reading.driver_version,
            tuple((q.name, q.unit) for q in reading.values),
        )
        return self.streams.setdefault(key, len(self.streams))

    def context_index(self, context: Json) -> int:
        """A row's context: its stream plus what a stream repeats (time source, flags)."""
        key = json.dumps(context, sort_keys=True)
        if key not in self.contexts:
            self.contexts[key] = len(self._context_list)
            self._context_list.append(context)
        return self.contexts[key]

    def envelope_tables(self) -> Json:
        devices = [
            {key: value for (key, _), value in zip(_DEVICE_KEYS, device, strict=True) if value}
            for device in self.devices
        ]
        streams = [
            {"p": p, "d": d, "k": k, "c": c, "dv": dv, "q": [list(nu) for nu in q]}
            for (p, d, k, c, dv, q) in self.streams
        ]
        return {
            "pt": [list(p) for p in self.patients],
            "dev": devices,
            "st": streams,
            "cx": self._context_list,
        }


def build_compact(batch: Sequence[StoredReading], now: HubTime, context: PayloadContext) -> Json:
    """The compact envelope for one message; ``now`` is when it is built (re-stamping)."""
    times = [published_time(stored.reading, now) for stored in batch]
    base = min(min(t.effective, t.receipt) for t in times)
    base_ms = epoch_ms(base)
    seq0 = min(stored.seq for stored in batch)
    tables = _Tables()
    rows = [
        _row(stored, pub, tables, base_ms, seq0) for stored, pub in zip(batch, times, strict=True)
    ]
    return {
        "fmt": FORMAT_NAME,
        "v": FORMAT_VERSION,
        "hub": context.hub_id,
        "sw": context.agent_version,
        "tz": context.timezone_name,
        "t0": format_instant(base),
        "s0": seq0,
        **tables.envelope_tables(),
        "r": rows,
    }


def _value(quantity: Quantity) -> int | float | str | None:
    """A number, or the special value's name (a special is never a number)."""
    if quantity.value is None:
        return quantity.special
    return compact_number(quantity.value)


def _row(
    stored: StoredReading, pub: PublishedTime, tables: _Tables, base_ms: int, seq0: int
) -> list[Any]:
    reading = stored.reading
    unsynced = not reading.received.clock_synced and RESTAMPED_FLAG not in pub.flags
    shared = {
        "tf": list(pub.flags),
        "ms": list(reading.status),
        "ex": reading.extra,
        # Kept (with mono) so the backend can still place the reading if the hub syncs
        # only after a reboot.
        "boot": reading.received.boot_id if unsynced else None,
    }
    context: Json = {"s": tables.stream_index(stored), "ts": SOURCE_CODES[pub.time_source]}
    context.update({k: v for k, v in shared.items() if v})
    row: list[Any] = [
        uuid_base64url(reading),
        stored.seq - seq0,
        tables.context_index(context),
        epoch_ms(pub.effective) - base_ms,
        [_value(q) for q in reading.values],
    ]
    own = {
        "rc": None
        if pub.time_source is TimeSource.HUB_RECEIPT
        else epoch_ms(pub.receipt) - base_ms,
        "mono": reading.received.monotonic_ns if unsynced else None,
        "dt": reading.device_time,
        "off": reading.device_clock_offset_s,
        "dq": reading.device_seq,
    }
    own_fields = {k: v for k, v in own.items() if v is not None}
    if own_fields:
        row.append(own_fields)
    return row


def decode_compact(document: Json) -> list[Json]:
    """Expand a compact envelope into one flat dict per reading (the backend's view).

    Raises:
        ValueError: the document is not wardlink-compact version 1.
    """
    if document.get("fmt") != FORMAT_NAME or document.get("v") != FORMAT_VERSION:
        raise ValueError(f"not {FORMAT_NAME} v{FORMAT_VERSION}: {document.get('fmt')!r}")
    base = datetime.fromisoformat(document["t0"]).astimezone(UTC)
    sources = {code: source for source, code in SOURCE_CODES.items()}
    readings = []
    for row in document["r"]:
        rid, seq_off, context_idx, eff_ms, values = row[:_FIXED_FIELDS]
        context = document["cx"][context_idx]
        extras: Json = {k: v for k, v in context.items() if k not in {"s", "ts"}}
        if len(row) > _FIXED_FIELDS:
            extras.update(row[_FIXED_FIELDS])
        stream = document["st"][context["s"]]
        patient_id, binding_version = document["pt"][stream["p"]]
        names = [name for name, _ in stream["q"]]
        readings.append(
            {
                "reading_id": uuid.UUID(bytes=base64.urlsafe_b64decode(rid + "==")),
                "seq": document["s0"] + seq_off,
                "patient_id": patient_id,
                "binding_version": binding_version,
                "device": document["dev"][stream["d"]],
                "kind": stream["k"],
                "values": dict(zip(names, values, strict=True)),
                "units": dict(stream["q"]),
                "effective_time": base + timedelta(milliseconds=eff_ms),
                "time_source": sources[context["ts"]],
                "receipt_time": base + timedelta(milliseconds=extras.get("rc", eff_ms)),
                **extras,
            }
        )
    return readings
