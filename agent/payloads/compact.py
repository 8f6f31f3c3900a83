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
import itertools
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
    """The envelope's lookup tables, filled as row classes refer to them."""

    def __init__(self) -> None:
        self.patients: dict[tuple[str, int], int] = {}
        self.devices: dict[tuple[str | None, ...], int] = {}
        self.streams: dict[tuple[Any, ...], int] = {}
        self.contexts: dict[tuple[Any, ...], int] = {}
        self._context_list: list[Json] = []

    def stream_index(
        self, context: ReadingContext, kind: str, cadence: int, shape: tuple[Any, ...]
    ) -> int:
        """What a row's values mean: patient, device, kind, quantity names and units."""
        patient = (context.patient.patient_id, context.patient.binding_version)
        device = tuple(getattr(context.device, attr) for _, attr in _DEVICE_KEYS)
        key = (
            self.patients.setdefault(patient, len(self.patients)),
            self.devices.setdefault(device, len(self.devices)),
            kind,
            CADENCES[cadence].value,
            context.driver_version,
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


# A row's class: everything the envelope's tables and the row's context index depend on,
# (context token, cadence, kind, quantity names and units, time source, time flags,
# status, extra as stored JSON, unsynced). Rows of one class share a context.
_RowClass = tuple[
    int, int, str, tuple[Any, ...], str, tuple[str, ...], tuple[str, ...], str | None, bool
]
# Bounds of the caches below: past them a cache is emptied (entries are cheap to remake).
_CONTEXT_TOKENS_MAX: Final = 1024
_LAYOUTS_MAX: Final = 256


class _ContextTokens:
    """A small int per distinct outbox context, so a row class hashes quickly.

    Looked up by the context object's identity first (a page's rows share one object),
    then by value. Tokens come from one counter and are never reused, so a cached
    layout keyed by a token from before a clear can never match another context.
    """

    def __init__(self) -> None:
        self._next = itertools.count()
        self._by_id: dict[int, tuple[ReadingContext, int]] = {}
        self._by_value: dict[ReadingContext, int] = {}

    def token(self, context: ReadingContext) -> int:
        hit = self._by_id.get(id(context))
        # The entry holds the object, so its id cannot be reused while the entry lives.
        if hit is not None and hit[0] is context:
            return hit[1]
        if len(self._by_id) >= _CONTEXT_TOKENS_MAX:
            self._by_id.clear()
            self._by_value.clear()
        token = self._by_value.get(context)
        if token is None:
            token = self._by_value[context] = next(self._next)
        self._by_id[id(context)] = (context, token)
        return token


_TOKENS: Final = _ContextTokens()
# Tables JSON and each class's context index, by the message's row classes in order of
# first appearance: most messages repeat the previous one's (one stream).
_layouts: dict[tuple[_RowClass, ...], tuple[str, tuple[int, ...]]] = {}


def _layout(
    classes: tuple[_RowClass, ...],
    tokens: Mapping[int, int],
    contexts: Mapping[int, ReadingContext],
) -> tuple[str, tuple[int, ...]]:
    """``"pt":...,"dev":...,"st":...,"cx":...`` (no braces) and each class's context.

    ``tokens`` maps the message's outbox context ids to the tokens in ``classes``.
    """
    hit = _layouts.get(classes)
    if hit is not None:
        return hit
    by_token = {token: contexts[context_id] for context_id, token in tokens.items()}
    tables = _Tables()
    indexes = []
    for token, cadence, kind, shape, source, flags, status, extra, unsynced in classes:
        context = by_token[token]
        stream = tables.stream_index(context, kind, cadence, shape)
        indexes.append(
            tables.context_index(
                stream,
                _SOURCE_CODE_BY_TEXT[source],
                flags,
                status,
                {} if extra is None else json.loads(extra),
                # Kept (with mono) so the backend can still place the reading if the hub
                # syncs only after a reboot.
                context.boot_id if unsynced else None,
            )
        )
    if len(_layouts) >= _LAYOUTS_MAX:
        _layouts.clear()
    hit = _layouts[classes] = (JSON.encode(tables.envelope_tables())[1:-1], tuple(indexes))
    return hit


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
    """The compact envelope as JSON text, straight from outbox rows (no Reading built)."""
    return compact_message(rows, contexts, now, context)[0]


# A row as read for its message: (fields, effective ms, receipt ms, class index, whether
# it needs its own receipt time "rc", whether it is unsynced).
_ReadRow = tuple[BodyFields, int, int, int, bool, bool]


def compact_message(
    rows: Sequence[PendingRow],
    contexts: Mapping[int, ReadingContext],
    now: HubTime,
    context: PayloadContext,
) -> tuple[str, int, int]:
    """The compact envelope as JSON text, and the first and last seq it holds.

    The text is written directly, not through a document: this runs for every reading
    published. Row classes put the tables (patients, devices, streams, contexts) and
    their JSON in a cache, so a message that repeats the previous one's streams costs
    one dict look-up for them. The bytes are pinned by golden files
    (tests/payloads/golden/compact_wire_varied.jsonl) made with the json-module encoder.
    """
    tokens: dict[int, int] = {}  # outbox context id -> token, for this message
    classes: dict[_RowClass, int] = {}
    read: list[_ReadRow] = []
    now_synced = now.clock_synced
    flags: Sequence[str]
    for _, _, cadence, context_id, body in rows:
        fields = body_fields(body)
        if fields.clock_synced or not now_synced:
            # Nothing to re-stamp (agent.clock.restamp returns the times unchanged).
            received = fields.received
            # An integer field is UTC microseconds: flooring to ms is what epoch_ms does.
            received_ms = received // 1000 if type(received) is int else _field_ms(received)
            effective = fields.effective
            effective_ms = received_ms if effective is None else _field_ms(effective)
            source, flags = fields.time_source, fields.time_flags
        else:
            effective_ms, received_ms, source, flags = _restamped(fields, contexts[context_id], now)
        token = tokens.get(context_id)
        if token is None:
            token = tokens[context_id] = _TOKENS.token(contexts[context_id])
        unsynced = not fields.clock_synced and RESTAMPED_FLAG not in flags
        extra = fields.extra
        row_class = (
            token,
            cadence,
            fields.kind,
            tuple([(q[0], q[2]) for q in fields.values]),
            source,
            tuple(flags),
            tuple(fields.status),
            JSON.encode(extra) if extra else None,
            unsynced,
        )
        index = classes.get(row_class)
        if index is None:
            index = classes[row_class] = len(classes)
        own_rc = _SOURCE_CODE_BY_TEXT[source] != _HUB_RECEIPT_CODE
        read.append((fields, effective_ms, received_ms, index, own_rc, unsynced))
    tables, context_of_class = _layout(tuple(classes), tokens, contexts)
    seqs = [row[0] for row in rows]
    seq0, seq_last = min(seqs), max(seqs)
    base_ms = min([min(r[1], r[2]) for r in read])
    parts = [
        _row_json(row, info, seq0, base_ms, context_of_class)
        for row, info in zip(rows, read, strict=True)
    ]
    text = (
        f'{_header_json(context)},"t0":{_instant_json(base_ms)},"s0":{seq0},{tables},'
        f'"r":[{",".join(parts)}]}}'
    )
    return text, seq0, seq_last


def _restamped(
    fields: BodyFields, context: ReadingContext, now: HubTime
) -> tuple[int, int, str, tuple[str, ...]]:
    """Effective ms, receipt ms, time source and flags of a row re-stamped at ``now``."""
    received = utc_from_field(fields.received)
    pub = restamp(
        received=HubTime(received, fields.monotonic_ns, context.boot_id, fields.clock_synced),
        effective_time=received if fields.effective is None else utc_from_field(fields.effective),
        time_source=TimeSource(fields.time_source),
        time_flags=tuple(fields.time_flags),
        now=now,
    )
    return epoch_ms(pub.effective), epoch_ms(pub.receipt), pub.time_source, pub.flags


def _field_ms(value: int | str) -> int:
    # An integer field is UTC microseconds: flooring to ms is what epoch_ms does.
    return value // 1000 if type(value) is int else epoch_ms(utc_from_field(value))


def _row_json(
    row: PendingRow,
    info: _ReadRow,
    seq0: int,
    base_ms: int,
    context_of_class: tuple[int, ...],
) -> str:
    """``[id, seq offset, context, effective ms, values(, own fields)]`` as JSON text."""
    fields, effective_ms, receipt_ms, index, own_rc, unsynced = info
    own = ""
    if (
        own_rc
        or unsynced
        or fields.device_time is not None
        or fields.device_clock_offset_s is not None
        or fields.device_seq is not None
    ):
        own = _own_json(fields, receipt_ms - base_ms if own_rc else None, unsynced)
    return (
        f'["{id_base64url(row[1])}",{row[0] - seq0},{context_of_class[index]},'
        f"{effective_ms - base_ms},[{_values_json(fields.values)}]{own}]"
    )


def _own_json(fields: BodyFields, receipt_offset_ms: int | None, unsynced: bool) -> str:
    """``,{...}``: the fields only this reading has, in order rc, mono, dt, off, dq."""
    own: list[str] = []
    if receipt_offset_ms is not None:
        own.append(f'"rc":{receipt_offset_ms}')
    if unsynced:
        own.append(f'"mono":{_number_json(fields.monotonic_ns)}')
    if fields.device_time is not None:
        own.append(f'"dt":{JSON.encode(fields.device_time)}')
    if fields.device_clock_offset_s is not None:
        own.append(f'"off":{_number_json(fields.device_clock_offset_s)}')
    if fields.device_seq is not None:
        own.append(f'"dq":{_number_json(fields.device_seq)}')
    return f",{{{','.join(own)}}}"


def _number_json(value: object) -> str:
    # An int as json writes it (int.__repr__); anything else through json itself.
    return int.__repr__(value) if type(value) is int else JSON.encode(value)


def _values_json(values: list[list[Any]]) -> str:
    """The values as json writes ``compact_number(value)``, or the special's name."""
    parts = []
    for quantity in values:
        value = quantity[1]
        if type(value) is float:
            if value.is_integer():  # False for NaN and the infinities
                parts.append(int.__repr__(int(value)))
            elif value - value == 0.0:
                parts.append(float.__repr__(value))
            else:
                parts.append(JSON.encode(value))  # NaN, Infinity as json writes them
        elif type(value) is int:
            parts.append(int.__repr__(value))
        elif value is None:
            parts.append(JSON.encode(quantity[3]))
        else:
            parts.append(JSON.encode(compact_number(value)))
    return ",".join(parts)


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


# The last second _instant_json wrote, and its text up to the seconds: consecutive
# messages mostly fall in the same second.
_last_second: tuple[int, str] = (0, "1970-01-01T00:00:00")


def _instant_json(ms: int) -> str:
    """``t0``: the instant ``ms`` after the epoch, as a quoted FHIR instant."""
    global _last_second  # noqa: PLW0603 - a one-entry cache
    second, milli = divmod(ms, 1000)
    cached_second, text = _last_second
    if second != cached_second:
        # format_instant gives "...:SS.000Z" for a whole second.
        text = format_instant(_EPOCH + timedelta(seconds=second))[:-5]
        _last_second = (second, text)
    return f'"{text}.{milli:03d}Z"'


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
