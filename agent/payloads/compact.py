"""Compact JSON batches for constrained links (format ``wardlink-compact`` version 1).

Pure: outbox rows (or Readings, put in row form) in, JSON text out; ``decode_compact``
reverses it (the backend and our tests use it). The rows are read as the outbox stores
them, through ``agent.outbox_codec.body_fields``: no Reading is built on the publish path.

One envelope names the hub, the patients, the devices and the
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

from agent.clock import RESTAMPED_FLAG, HubTime, TimeSource, restamp
from agent.outbox_codec import (
    CADENCE_CODES,
    CADENCES,
    BodyFields,
    PendingRow,
    ReadingContext,
    body_fields,
    context_of,
    encode_body,
    utc_from_field,
)
from agent.payloads.context import (
    PayloadContext,
    compact_number,
    epoch_ms,
    format_instant,
    id_base64url,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from agent.readings import StoredReading

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
# The same by the text a stored body holds (a TimeSource is that text too).
_SOURCE_CODE_BY_TEXT: Final[dict[str, int]] = {str(s): code for s, code in SOURCE_CODES.items()}
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
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
        # A message's rows mostly share their outbox context and quantity names.
        self._by_row_shape: dict[tuple[Any, ...], int] = {}

    def stream_index(
        self, context_id: int, context: ReadingContext, kind: str, cadence: int, values: list[Any]
    ) -> int:
        """What a row's values mean: patient, device, kind, quantity names and units."""
        shape = tuple([(q[0], q[2]) for q in values])
        memo = (context_id, kind, cadence, shape)
        index = self._by_row_shape.get(memo)
        if index is None:
            patient, device, stream = _stream_key(context, kind, cadence, shape)
            key = (
                self.patients.setdefault(patient, len(self.patients)),
                self.devices.setdefault(device, len(self.devices)),
                *stream,
            )
            index = self._by_row_shape[memo] = self.streams.setdefault(key, len(self.streams))
        return index

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


_StreamKey = tuple[tuple[str, int], tuple[str | None, ...], tuple[Any, ...]]
# Stream facts by (outbox context, kind, cadence, quantity names and units). The context
# object is kept in the value, so its id cannot be reused while the entry lives; bounded.
_STREAM_KEYS_MAX: Final = 1024
_stream_keys: dict[tuple[int, str, int, tuple[Any, ...]], tuple[ReadingContext, _StreamKey]] = {}


def _stream_key(
    context: ReadingContext, kind: str, cadence: int, shape: tuple[Any, ...]
) -> _StreamKey:
    """A stream's patient and device table keys, and the rest of its key, by value."""
    memo = (id(context), kind, cadence, shape)
    hit = _stream_keys.get(memo)
    if hit is not None and hit[0] is context:
        return hit[1]
    patient = (context.patient.patient_id, context.patient.binding_version)
    device = tuple(getattr(context.device, attr) for _, attr in _DEVICE_KEYS)
    key = (patient, device, (kind, CADENCES[cadence].value, context.driver_version, shape))
    if len(_stream_keys) >= _STREAM_KEYS_MAX:
        _stream_keys.clear()
    _stream_keys[memo] = (context, key)
    return key


def compact_json(batch: Sequence[StoredReading], now: HubTime, context: PayloadContext) -> str:
    """The compact envelope for Readings, as JSON text.

    The same text ``compact_json_rows`` gives for them stored in the outbox: they are
    put in the outbox's row form first, so there is one encoder.
    """
    rows, contexts = as_outbox_rows(batch)
    return compact_json_rows(rows, contexts, now, context)


def as_outbox_rows(
    batch: Sequence[StoredReading],
) -> tuple[list[PendingRow], dict[int, ReadingContext]]:
    """``batch`` in the form the outbox stores it (agent/outbox_codec.py)."""
    ids: dict[ReadingContext, int] = {}
    rows: list[PendingRow] = []
    for stored in batch:
        reading = stored.reading
        context_id = ids.setdefault(context_of(reading), len(ids))
        cadence = CADENCE_CODES[reading.cadence]
        body = encode_body(reading)
        rows.append((stored.seq, reading.reading_id.bytes, cadence, context_id, body))
    return rows, {context_id: context for context, context_id in ids.items()}


def compact_json_rows(
    rows: Sequence[PendingRow],
    contexts: Mapping[int, ReadingContext],
    now: HubTime,
    context: PayloadContext,
) -> str:
    """The compact envelope as JSON text, straight from outbox rows (no Reading built).

    Built from pieces because most messages repeat the previous one's header and tables
    (one device, one stream): those are encoded once and reused, the rows every time.
    """
    timed = [_timed(row, contexts[row[3]], now) for row in rows]
    base_ms = min(min(t[1], t[2]) for t in timed)
    seq0 = min(row[0] for row in rows)
    tables = _Tables()
    encoded = [
        _row(row, contexts[row[3]], times, tables, base_ms, seq0)
        for row, times in zip(rows, timed, strict=True)
    ]
    head = _header_json(context)
    t0 = _instant_json(base_ms)
    body = _tables_json(tables)
    return f'{head},"t0":{t0},"s0":{seq0},{body},"r":{JSON.encode(encoded)}}}'


# A row's published times: (fields, effective ms, receipt ms, time source, time flags).
_Timed = tuple[BodyFields, int, int, str, "tuple[str, ...] | list[str]"]


def _timed(row: PendingRow, context: ReadingContext, now: HubTime) -> _Timed:
    """The row's fields and its times as published (re-stamped if the clock synced since)."""
    fields = body_fields(row[4])
    if fields.clock_synced or not now.clock_synced:
        # Nothing to re-stamp (agent.clock.restamp returns the times unchanged).
        received_ms = _field_ms(fields.received)
        effective = fields.effective
        effective_ms = received_ms if effective is None else _field_ms(effective)
        return fields, effective_ms, received_ms, fields.time_source, fields.time_flags
    received = utc_from_field(fields.received)
    pub = restamp(
        received=HubTime(received, fields.monotonic_ns, context.boot_id, fields.clock_synced),
        effective_time=received if fields.effective is None else utc_from_field(fields.effective),
        time_source=TimeSource(fields.time_source),
        time_flags=tuple(fields.time_flags),
        now=now,
    )
    return fields, epoch_ms(pub.effective), epoch_ms(pub.receipt), pub.time_source, pub.flags


def _field_ms(value: int | str) -> int:
    # An integer field is UTC microseconds: flooring to ms is what epoch_ms does.
    return value // 1000 if type(value) is int else epoch_ms(utc_from_field(value))


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


def _instant_json(ms: int) -> str:
    """``t0``: the instant ``ms`` after the epoch, as a quoted FHIR instant."""
    return f'"{format_instant(_EPOCH + timedelta(milliseconds=ms))}"'


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


def _row(
    row: PendingRow,
    context: ReadingContext,
    times: _Timed,
    tables: _Tables,
    base_ms: int,
    seq0: int,
) -> list[Any]:
    seq, reading_id, cadence, context_id, _ = row
    fields, effective_ms, receipt_ms, time_source, flags = times
    unsynced = not fields.clock_synced and RESTAMPED_FLAG not in flags
    source_code = _SOURCE_CODE_BY_TEXT[time_source]
    context_index = tables.context_index(
        tables.stream_index(context_id, context, fields.kind, cadence, fields.values),
        source_code,
        tuple(flags),
        tuple(fields.status),
        fields.extra,
        # Kept (with mono) so the backend can still place the reading if the hub syncs
        # only after a reboot.
        context.boot_id if unsynced else None,
    )
    encoded: list[Any] = [
        id_base64url(reading_id),
        seq - seq0,
        context_index,
        effective_ms - base_ms,
        [compact_number(q[1]) if q[1] is not None else q[3] for q in fields.values],
    ]
    # The fields only this reading has, most rows none: rc, mono, dt, off, dq in order.
    own: Json = {}
    if source_code != _HUB_RECEIPT_CODE:
        own["rc"] = receipt_ms - base_ms
    if unsynced:
        own["mono"] = fields.monotonic_ns
    if fields.device_time is not None:
        own["dt"] = fields.device_time
    if fields.device_clock_offset_s is not None:
        own["off"] = fields.device_clock_offset_s
    if fields.device_seq is not None:
        own["dq"] = fields.device_seq
    if own:
        encoded.append(own)
    return encoded


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
