"""Compact JSON batches for constrained links (format ``wardlink-compact`` version 1).

Pure: readings in, a JSON-ready dict out; ``decode_compact`` reverses it (the backend
and our tests use it). One envelope names the hub, the patients, the devices and the
"streams" (device + patient + kind + quantity names and units); each reading is then a
short array that points into those tables. compact.schema.json is the contract and
docs/payloads.md explains every field.
"""

from __future__ import annotations

import base64
import functools
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
    from agent.readings import Quantity, Reading, StoredReading

# How every payload is written: no spaces, UTF-8 as is (encode_batch and compact_json).
JSON: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
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
_HUB_RECEIPT_CODE: Final = SOURCE_CODES[TimeSource.HUB_RECEIPT]
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
        self.contexts: dict[tuple[Any, ...], int] = {}
        self._context_list: list[Json] = []
        # Rows of one message share their device and patient objects (the outbox decodes
        # them from one cached context), so a stream is first looked up by identity; the
        # batch holds every object alive, so an id is not reused while this table lives.
        self._by_identity: dict[tuple[Any, ...], int] = {}

    def stream_index(self, reading: Reading) -> int:
        """What a row's values mean: patient, device, kind, quantity names and units."""
        shape = tuple([(q.name, q.unit) for q in reading.values])
        memo = (
            id(reading.device),
            id(reading.patient),
            id(reading.kind),
            id(reading.cadence),
            reading.driver_version,
            shape,
        )
        index = self._by_identity.get(memo)
        if index is None:
            index = self._stream_by_value(reading, shape)
            self._by_identity[memo] = index
        return index

    def _stream_by_value(self, reading: Reading, shape: tuple[tuple[str, str], ...]) -> int:
        patient = (reading.patient.patient_id, reading.patient.binding_version)
        device = tuple(getattr(reading.device, attr) for _, attr in _DEVICE_KEYS)
        key = (
            self.patients.setdefault(patient, len(self.patients)),
            self.devices.setdefault(device, len(self.devices)),
            reading.kind.value,
            reading.cadence.value,
            reading.driver_version,
            shape,
        )
        return self.streams.setdefault(key, len(self.streams))

    def context_index(
        self,
        stream: int,
        source_code: int,
        flags: tuple[str, ...],
        status: tuple[str, ...],
        extra: Json,
        boot: str | None,
    ) -> int:
        """A row's context: its stream plus what a stream repeats (time source, flags).

        Two contexts are one when their JSON is; ``extra`` is the only part whose JSON
        is not decided by its Python equality, so it is keyed by its sorted JSON.
        """
        extra_key = json.dumps(extra, sort_keys=True) if extra else None
        key = (stream, source_code, flags, status, extra_key, boot)
        index = self.contexts.get(key)
        if index is None:
            index = self.contexts[key] = len(self._context_list)
            context: Json = {"s": stream, "ts": source_code}
            shared = {"tf": list(flags), "ms": list(status), "ex": extra, "boot": boot}
            context.update({k: v for k, v in shared.items() if v})
            self._context_list.append(context)
        return index

    def cache_key(self) -> tuple[Any, ...] | None:
        """What the tables' JSON depends on, or None when it cannot be cached."""
        if any(key[4] is not None for key in self.contexts):
            return None
        return (tuple(self.patients), tuple(self.devices), tuple(self.streams), *self.contexts)

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
    base, seq0, tables, rows = _build(batch, now)
    return {
        **_header(context),
        "t0": format_instant(base),
        "s0": seq0,
        **tables.envelope_tables(),
        "r": rows,
    }


def compact_json(batch: Sequence[StoredReading], now: HubTime, context: PayloadContext) -> str:
    """``build_compact`` as compact JSON text, the same characters ``JSON.encode`` gives.

    Built from pieces because most messages repeat the previous one's header and tables
    (one device, one stream): those are encoded once and reused, the rows every time.
    """
    base, seq0, tables, rows = _build(batch, now)
    head = _header_json(context)
    t0 = JSON.encode(format_instant(base))
    body = _tables_json(tables)
    return f'{head},"t0":{t0},"s0":{seq0},{body},"r":{JSON.encode(rows)}}}'


def _build(
    batch: Sequence[StoredReading], now: HubTime
) -> tuple[datetime, int, _Tables, list[list[Any]]]:
    times = [published_time(stored.reading, now) for stored in batch]
    base = min(min(t.effective, t.receipt) for t in times)
    base_ms = epoch_ms(base)
    seq0 = min(stored.seq for stored in batch)
    tables = _Tables()
    rows = [
        _row(stored, pub, tables, base_ms, seq0) for stored, pub in zip(batch, times, strict=True)
    ]
    return base, seq0, tables, rows


def _header(context: PayloadContext) -> Json:
    return {
        "fmt": FORMAT_NAME,
        "v": FORMAT_VERSION,
        "hub": context.hub_id,
        "sw": context.agent_version,
        "tz": context.timezone_name,
    }


@functools.lru_cache(maxsize=8)
def _header_json(context: PayloadContext) -> str:
    """The envelope's opening (no closing brace): one per hub configuration."""
    return JSON.encode(_header(context))[:-1]


# Tables JSON by the tables' content. A key holds only strings, numbers and tuples of
# them, so equal keys give equal JSON; tables with an "ex" are not cached (an extra's
# key order shows in its JSON but not in the key).
_TABLES_CACHE_ENTRIES: Final = 256
_tables_cache: dict[tuple[Any, ...], str] = {}


def _tables_json(tables: _Tables) -> str:
    """``"pt":...,"dev":...,"st":...,"cx":...`` for ``tables`` (no surrounding braces)."""
    key = tables.cache_key()
    text = _tables_cache.get(key) if key is not None else None
    if text is None:
        text = JSON.encode(tables.envelope_tables())[1:-1]
        if key is not None:
            if len(_tables_cache) >= _TABLES_CACHE_ENTRIES:
                _tables_cache.clear()
            _tables_cache[key] = text
    return text


def _value(quantity: Quantity) -> int | float | str | None:
    """A number, or the special value's name (a special is never a number)."""
    if quantity.value is None:
        return quantity.special
    return compact_number(quantity.value)


def _source_code(source: TimeSource) -> int:
    # Identity tests: an Enum's hash is a Python-level call, this runs once per row.
    if source is TimeSource.HUB_RECEIPT:
        return SOURCE_CODES[TimeSource.HUB_RECEIPT]
    if source is TimeSource.DEVICE:
        return SOURCE_CODES[TimeSource.DEVICE]
    return SOURCE_CODES[source]


def _row(
    stored: StoredReading, pub: PublishedTime, tables: _Tables, base_ms: int, seq0: int
) -> list[Any]:
    reading = stored.reading
    received = reading.received
    unsynced = not received.clock_synced and RESTAMPED_FLAG not in pub.flags
    source_code = _source_code(pub.time_source)
    context_index = tables.context_index(
        tables.stream_index(reading),
        source_code,
        pub.flags,
        reading.status,
        reading.extra,
        # Kept (with mono) so the backend can still place the reading if the hub syncs
        # only after a reboot.
        received.boot_id if unsynced else None,
    )
    effective_ms = epoch_ms(pub.effective)
    row: list[Any] = [
        uuid_base64url(reading),
        stored.seq - seq0,
        context_index,
        effective_ms - base_ms,
        [_value(q) for q in reading.values],
    ]
    own = _own_fields(reading, pub, base_ms, effective_ms, source_code, unsynced=unsynced)
    if own:
        row.append(own)
    return row


def _own_fields(
    reading: Reading,
    pub: PublishedTime,
    base_ms: int,
    effective_ms: int,
    source_code: int,
    *,
    unsynced: bool,
) -> Json | None:
    """The fields only this reading has, or None (most rows have none)."""
    receipt_ms = None
    if source_code != _HUB_RECEIPT_CODE:
        receipt_ms = (
            effective_ms if pub.receipt is pub.effective else epoch_ms(pub.receipt)
        ) - base_ms
    own = {
        "rc": receipt_ms,
        "mono": reading.received.monotonic_ns if unsynced else None,
        "dt": reading.device_time,
        "off": reading.device_clock_offset_s,
        "dq": reading.device_seq,
    }
    own_fields = {k: v for k, v in own.items() if v is not None}
    return own_fields or None


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
