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
from typing import TYPE_CHECKING, Any, Final, Generic, NamedTuple, TypeVar

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
    ids_base64url,
)
from agent.payloads.stream_template import BodyTemplate, is_plain, make_template

if TYPE_CHECKING:
    import re
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


# What a row's context depends on besides its outbox context and cadence: (kind,
# quantity names and units, time source, time flags, status, extra as stored JSON,
# unsynced). Rows with equal parts, outbox context and cadence share a context.
_ClassPart = tuple[str, tuple[Any, ...], str, tuple[str, ...], tuple[str, ...], str | None, bool]
# A row class as a key: (context token, cadence, class part id); small ints hash fast.
_ClassKey = tuple[int, int, int]
# Bounds of the caches below: past them a cache is emptied (entries are cheap to remake).
_IDS_MAX: Final = 4096
_LAYOUTS_MAX: Final = 256
_TEMPLATES_MAX: Final = 256
_TEMPLATES_TRIED: Final = 4
_T = TypeVar("_T")


class _Ids(Generic[_T]):
    """A small int per distinct value.

    Ids come from a counter and are never reused, so a cached entry keyed by an id from
    before a clear can never match another value.
    """

    def __init__(self) -> None:
        self._next = itertools.count()
        self._by_value: dict[_T, int] = {}

    def of(self, value: _T) -> int:
        found = self._by_value.get(value)
        if found is None:
            if len(self._by_value) >= _IDS_MAX:
                self._by_value.clear()
            found = self._by_value[value] = next(self._next)
        return found


class _ContextTokens:
    """Ids of outbox contexts: by the object's identity first (rows share one), then value."""

    def __init__(self) -> None:
        self._ids = _Ids[ReadingContext]()
        self._by_object: dict[int, tuple[ReadingContext, int]] = {}

    def token(self, context: ReadingContext) -> int:
        hit = self._by_object.get(id(context))
        # The entry holds the object, so its id cannot be reused while the entry lives.
        if hit is not None and hit[0] is context:
            return hit[1]
        if len(self._by_object) >= _IDS_MAX:
            self._by_object.clear()
        token = self._ids.of(context)
        self._by_object[id(context)] = (context, token)
        return token


_TOKENS: Final = _ContextTokens()
_PARTS: Final = _Ids[_ClassPart]()
# Tables JSON and each class's context index, by the message's row classes in order of
# first appearance: most messages repeat the previous one's (one stream).
_layouts: dict[tuple[_ClassKey, ...], tuple[str, tuple[int, ...]]] = {}


def _layout(
    classes: tuple[_ClassKey, ...],
    parts: Sequence[_ClassPart],
    tokens: Mapping[int, int],
    contexts: Mapping[int, ReadingContext],
) -> tuple[str, tuple[int, ...]]:
    """``"pt":...,"dev":...,"st":...,"cx":...`` (no braces) and each class's context.

    ``parts`` are the classes' parts; ``tokens`` maps the message's outbox context ids to
    the tokens in ``classes``.
    """
    hit = _layouts.get(classes)
    if hit is not None:
        return hit
    by_token = {token: contexts[context_id] for context_id, token in tokens.items()}
    tables = _Tables()
    indexes = []
    for (token, cadence, _), part in zip(classes, parts, strict=True):
        kind, shape, source, flags, status, extra, unsynced = part
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


class _Template(NamedTuple):
    """A stream's body template (stream_template) and what its rows share in a message."""

    body: BodyTemplate
    part_id: int
    part: _ClassPart
    clock_synced: bool
    own_rc: bool  # each row carries its receipt time ("rc")
    unsynced: bool  # each row carries its monotonic time ("mono")
    # Per quantity: the index of its group, or its special's JSON; None when every
    # quantity is a number (the values are then the groups before the two times).
    slots: tuple[int | str, ...] | None


# Templates by (class part id, clock synced, per quantity (no value, special)); the few
# used last are tried on each body first, most recent first.
_templates: dict[tuple[Any, ...], _Template | None] = {}
_recent_templates: list[_Template] = []


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


# A row as read for its message: (effective ms, receipt ms, whether it carries its own
# receipt time "rc", its values' JSON, its other own fields' JSON, its class index).
_ReadRow = tuple[int, int, bool, str, str, int]


def compact_message(
    rows: Sequence[PendingRow],
    contexts: Mapping[int, ReadingContext],
    now: HubTime,
    context: PayloadContext,
) -> tuple[str, int, int]:
    """The compact envelope as JSON text, and the first and last seq it holds.

    The text is written directly, not through a document: this runs for every reading
    published. The bodies of a run of one stream's samples are read through the
    stream's template (one regex match each) when there is one, others are parsed with
    ``body_fields``. Row classes put the tables (patients, devices, streams, contexts)
    and their JSON in a cache, so a message that repeats the previous one's streams
    costs one look-up for them. The bytes are pinned by golden files made with the
    json-module encoder (tests/payloads/golden/).
    """
    tokens: dict[int, int] = {}  # outbox context id -> token, for this message
    classes: dict[_ClassKey, int] = {}
    class_parts: list[_ClassPart] = []
    read: list[_ReadRow] = []
    now_synced = now.clock_synced
    template = _recent_templates[0] if _recent_templates else None
    position = 0
    while position < len(rows):
        _, _, cadence, context_id, body = rows[position]
        token = tokens.get(context_id)
        if token is None:
            token = tokens[context_id] = _TOKENS.token(contexts[context_id])
        match = template.body.match(body) if template is not None else None
        if match is None:
            template, match = _recent_template_of(body)
        if match is not None and template is not None and (template.clock_synced or not now_synced):
            # Nothing to re-stamp: read the run through the template.
            part_id, part = template.part_id, template.part
        else:
            fields = body_fields(body)
            part, row = _parsed_row(fields, contexts[context_id], now)
            part_id = _PARTS.of(part)
            if match is None and (fields.clock_synced or not now_synced):
                # A template stands for bodies as stored: learnt only from one not re-stamped.
                template = _learn_template(body, fields, part_id, part) or template
            match = None
        key = (token, cadence, part_id)
        index = classes.get(key)
        if index is None:
            index = classes[key] = len(class_parts)
            class_parts.append(part)
        if match is not None and template is not None:
            position = _read_run(template, match, rows, position, index, read)
        else:
            read.append((*row, index))
            position += 1
    tables, context_of_class = _layout(tuple(classes), class_parts, tokens, contexts)
    seqs = [row[0] for row in rows]
    seq0, seq_last = min(seqs), max(seqs)
    base_ms = min([min(r[0], r[1]) for r in read])
    encoded = _rows_json(rows, read, seq0, base_ms, context_of_class)
    text = (
        f'{_header_json(context)},"t0":{_instant_json(base_ms)},"s0":{seq0},{tables},'
        f'"r":[{encoded}]}}'
    )
    return text, seq0, seq_last


def _read_run(
    template: _Template,
    match: re.Match[str],
    rows: Sequence[PendingRow],
    start: int,
    index: int,
    read: list[_ReadRow],
) -> int:
    """Read ``rows[start]`` (``match``) and the rows after it of the same stream.

    Returns the position of the first row not read. A run's rows share their outbox
    context, cadence and template, so their class (``index``).
    """
    cadence, context_id = rows[start][2], rows[start][3]
    match_body = template.body.match
    texts = _number_texts
    slots, own_rc, unsynced = template.slots, template.own_rc, template.unsynced
    position = start
    while True:
        groups = match.groups()
        # No separate effective time: it is the receipt time (UTC microseconds).
        received_ms = int(groups[-2]) // 1000
        if slots is None:
            values = ",".join([texts.get(n) or _number_text(n) for n in groups[:-2]])
        else:
            values = ",".join(
                [
                    s if isinstance(s, str) else texts.get(groups[s]) or _number_text(groups[s])
                    for s in slots
                ]
            )
        own = f'"mono":{groups[-1]}' if unsynced else ""
        read.append((received_ms, received_ms, own_rc, values, own, index))
        position += 1
        if position == len(rows):
            return position
        _, _, next_cadence, next_context_id, body = rows[position]
        if next_cadence != cadence or next_context_id != context_id:
            return position
        next_match = match_body(body)
        if next_match is None:
            return position
        match = next_match


def _parsed_row(
    fields: BodyFields, context: ReadingContext, now: HubTime
) -> tuple[_ClassPart, tuple[int, int, bool, str, str]]:
    """A row read from its parsed body: its class part, and the row."""
    if fields.clock_synced or not now.clock_synced:
        # Nothing to re-stamp (agent.clock.restamp returns the times unchanged).
        received_ms = _field_ms(fields.received)
        effective = fields.effective
        effective_ms = received_ms if effective is None else _field_ms(effective)
        source, flags = fields.time_source, tuple(fields.time_flags)
    else:
        effective_ms, received_ms, source, flags = _restamped(fields, context, now)
    unsynced = not fields.clock_synced and RESTAMPED_FLAG not in flags
    extra = fields.extra
    part = (
        fields.kind,
        tuple([(q[0], q[2]) for q in fields.values]),
        source,
        flags,
        tuple(fields.status),
        JSON.encode(extra) if extra else None,
        unsynced,
    )
    own_rc = _SOURCE_CODE_BY_TEXT[source] != _HUB_RECEIPT_CODE
    values = _values_json(fields.values)
    return part, (effective_ms, received_ms, own_rc, values, _own_json(fields, unsynced))


def _rows_json(
    rows: Sequence[PendingRow],
    read: list[_ReadRow],
    seq0: int,
    base_ms: int,
    context_of_class: tuple[int, ...],
) -> str:
    """The rows, ``[id, seq offset, context, effective ms, values(, own)]``, comma-joined."""
    encoded = []
    ids = ids_base64url([row[1] for row in rows])
    for row, reading_id, (effective_ms, received_ms, own_rc, values, own, index) in zip(
        rows, ids, read, strict=True
    ):
        if own_rc:
            rc = f'"rc":{received_ms - base_ms}'
            own = f"{rc},{own}" if own else rc  # noqa: PLW2901 - "rc" comes first
        encoded.append(
            f'["{reading_id}",{row[0] - seq0},{context_of_class[index]},'
            f"{effective_ms - base_ms},[{values}]{f',{{{own}}}' if own else ''}]"
        )
    return ",".join(encoded)


def _recent_template_of(body: str) -> tuple[_Template | None, re.Match[str] | None]:
    """The recently used template matching ``body`` (moved to the front), if any."""
    for position, template in enumerate(_recent_templates):
        match = template.body.match(body)
        if match is not None:
            if position:
                _recent_templates.insert(0, _recent_templates.pop(position))
            return template, match
    return None, None


def _learn_template(
    body: str, fields: BodyFields, part_id: int, part: _ClassPart
) -> _Template | None:
    """The template for a body no recent template matched (made once per stream shape)."""
    if not is_plain(fields):
        return None
    key = (part_id, fields.clock_synced, tuple([(q[1] is None, q[3]) for q in fields.values]))
    if key in _templates:
        template = _templates[key]
    else:
        made = make_template(body, fields)
        template = None if made is None else _compact_template(made, part_id, part)
        if len(_templates) >= _TEMPLATES_MAX:
            _templates.clear()
        _templates[key] = template
    if template is not None:
        _recent_templates.insert(0, template)
        del _recent_templates[_TEMPLATES_TRIED:]
    return template


def _compact_template(body: BodyTemplate, part_id: int, part: _ClassPart) -> _Template:
    fields = body.fields
    slots: tuple[int | str, ...] | None = None
    if None in body.value_groups:
        slots = tuple(
            JSON.encode(quantity[3]) if group is None else group
            for quantity, group in zip(fields.values, body.value_groups, strict=True)
        )
    return _Template(
        body=body,
        part_id=part_id,
        part=part,
        clock_synced=fields.clock_synced,
        own_rc=_SOURCE_CODE_BY_TEXT[fields.time_source] != _HUB_RECEIPT_CODE,
        unsynced=part[-1],
        slots=slots,
    )


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


def _own_json(fields: BodyFields, unsynced: bool) -> str:
    """The fields only this reading has but "rc": mono, dt, off, dq in order (JSON, no braces)."""
    own: list[str] = []
    if unsynced:
        own.append(f'"mono":{_number_json(fields.monotonic_ns)}')
    if fields.device_time is not None:
        own.append(f'"dt":{JSON.encode(fields.device_time)}')
    if fields.device_clock_offset_s is not None:
        own.append(f'"off":{_number_json(fields.device_clock_offset_s)}')
    if fields.device_seq is not None:
        own.append(f'"dq":{_number_json(fields.device_seq)}')
    return ",".join(own)


def _number_json(value: object) -> str:
    # An int as json writes it (int.__repr__); anything else through json itself.
    return int.__repr__(value) if type(value) is int else JSON.encode(value)


# JSON number text as a template group holds it -> as the compact row writes it. Device
# values repeat (an oximeter's SpO2 is a whole percent): most are found here.
_NUMBER_TEXTS_MAX: Final = 4096
_number_texts: dict[str, str] = {}


def _number_text(text: str) -> str:
    """JSON number text as json writes its ``compact_number`` (cached)."""
    if text.isdigit() or (text[0] == "-" and text[1:].isdigit() and text != "-0"):
        compact = text  # an integer, as Python writes it (JSON has no leading zeros)
    else:
        compact = _float_json(float(text))  # json reads any other number as a float
    if len(_number_texts) >= _NUMBER_TEXTS_MAX:
        _number_texts.clear()
    _number_texts[text] = compact
    return compact


def _float_json(value: float) -> str:
    """``compact_number(value)`` as json writes it."""
    if value.is_integer():  # False for NaN and the infinities
        return int.__repr__(int(value))
    if value - value == 0.0:
        return float.__repr__(value)
    return JSON.encode(value)  # NaN, Infinity as json writes them


def _values_json(values: list[list[Any]]) -> str:
    """The values as json writes ``compact_number(value)``, or the special's name."""
    parts = []
    for quantity in values:
        value = quantity[1]
        if type(value) is float:
            parts.append(_float_json(value))
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
