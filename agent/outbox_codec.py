"""How the outbox stores a Reading compactly: a shared context plus a small per-row body.

Pure: no sqlite3, no asyncio, no clock. A reading is split into
- its *context* (device identity, patient binding, driver version, boot id), which
  repeats for every reading of a device session and is stored once per outbox;
- its *body*, a compact JSON list of the fields that change per reading;
- its ``reading_id`` (16 raw bytes, a column of its own) and its *natural-key hash*.

The natural key is stored as 24 bytes: an 8-byte prefix and 16 identifying bytes.
Device records (keys built from the device's sequence number or timestamp) must map to
the same bytes however late they are re-sent: zero prefix + the first 16 bytes of the
key's SHA-256. Stream samples have keys made of their own random ``reading_id`` (see
``agent.readings.natural_key_for``): receipt-time prefix + the reading_id's bytes, so
inserts append to the end of the UNIQUE index instead of rewriting a random index page
per row (a 4 KiB page write per reading would break the disk-wear budget).
"""

from __future__ import annotations

import hashlib
import json
import json.scanner
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeAlias

from agent.clock import HubTime, TimeSource
from agent.readings import (
    Cadence,
    DeviceIdentity,
    Kind,
    PatientBinding,
    Quantity,
    Reading,
    StoredReading,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

CADENCE_CODES: Final[dict[Cadence, int]] = {Cadence.SPOT: 0, Cadence.CONTINUOUS: 1}
CADENCES: Final[dict[int, Cadence]] = {code: cadence for cadence, code in CADENCE_CODES.items()}
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_ZERO_OFFSET: Final = timedelta(0)
# Body fields after the first _REQUIRED_FIELDS may be left off; these are their defaults
# (effective time, natural key, device time, device seq, clock offset, flags, status, extra).
_REQUIRED_FIELDS: Final = 6
_OPTIONAL_DEFAULTS: Final[tuple[Any, ...]] = (None, None, None, None, None, [], [], {})
_DEVICE_FIELDS: Final = DeviceIdentity.__slots__
_ZERO_PREFIX: Final = bytes(8)
_JSON_SEPARATORS: Final = (",", ":")
_ENCODER: Final = json.JSONEncoder(separators=_JSON_SEPARATORS)
# JSON text of the short strings a plain sample repeats (kind, quantity names, units,
# time source): quoted once, not per reading. Bounded: cleared when it grows past this.
_QUOTED: dict[str, str] = {}
_QUOTED_MAX: Final = 4096
# JSON of each Kind and TimeSource member, by id(): an Enum's own hash is Python code. Safe,
# as members live as long as the process, so no other object can share their id.
_ENUM_JSON: Final[dict[int, str]] = {
    id(member): _ENCODER.encode(member.value) for enum in (Kind, TimeSource) for member in enum
}
# A quantity's JSON before and after its value, by (name, unit, special); same bound.
_SHAPES: dict[tuple[object, object, object], tuple[str, str]] = {}


@dataclass(frozen=True, slots=True)
class ReadingContext:
    """What a reading shares with the other readings of its device session."""

    device: DeviceIdentity
    patient: PatientBinding
    driver_version: str
    boot_id: str


class EncodedReading(NamedTuple):
    """One reading ready for an INSERT: every field is what the row stores.

    A tuple, not a dataclass: building a frozen dataclass costs several times more, and
    one is built per captured reading.
    """

    natural_key_hash: bytes
    reading_id: bytes
    cadence: int
    context_json: str
    body: str


def context_of(reading: Reading) -> ReadingContext:
    """The shared part of ``reading``."""
    return ReadingContext(
        reading.device, reading.patient, reading.driver_version, reading.received.boot_id
    )


def encode_context(context: ReadingContext) -> str:
    """Deterministic JSON for a context (equal contexts give equal text)."""
    return json.dumps(
        [
            [getattr(context.device, name) for name in _DEVICE_FIELDS],
            [context.patient.patient_id, context.patient.binding_version],
            context.driver_version,
            context.boot_id,
        ],
        separators=_JSON_SEPARATORS,
    )


def decode_context(text: str) -> ReadingContext:
    """Reverse ``encode_context``."""
    device, patient, driver_version, boot_id = json.loads(text)
    return ReadingContext(
        DeviceIdentity(**dict(zip(_DEVICE_FIELDS, device, strict=True))),
        PatientBinding(patient[0], patient[1]),
        driver_version,
        boot_id,
    )


def _id_form_key(reading: Reading) -> str:
    # Must match agent.readings.natural_key_for for a sample with no device record id.
    return f"{reading.device.device_id}:{reading.kind}:id:{reading.reading_id}"


def _natural_key_hash(reading: Reading, is_id_form: bool, received_us: int | str) -> bytes:
    if is_id_form:
        # The key's only varying part is the reading_id itself: no hash needed.
        if isinstance(received_us, str):
            received_us = int(reading.received.utc.timestamp() * 1_000_000)
        return max(0, received_us).to_bytes(8, "big") + reading.reading_id.bytes
    return _ZERO_PREFIX + hashlib.sha256(reading.natural_key.encode()).digest()[:16]


def natural_key_hash(reading: Reading) -> bytes:
    """The 24 bytes the UNIQUE index holds for ``reading.natural_key`` (module docstring)."""
    is_id_form = reading.natural_key == _id_form_key(reading)
    return _natural_key_hash(reading, is_id_form, _utc_field(reading.received.utc))


def _utc_field(moment: datetime) -> int | str:
    # Integer microseconds since the epoch for UTC (16 digits instead of a 32-character
    # ISO string, on every row); any other offset keeps its exact ISO text.
    if moment.utcoffset() == _ZERO_OFFSET:
        return (moment - _EPOCH) // _MICROSECOND
    return moment.isoformat()


def _utc_from_field(value: int | str) -> datetime:
    if isinstance(value, int):
        return _EPOCH + timedelta(microseconds=value)
    return datetime.fromisoformat(value)


def _encode_body(reading: Reading, is_id_form: bool, received_field: int | str) -> str:
    received = reading.received.utc
    effective = reading.effective_time
    same_moment = effective is received or (
        effective == received and effective.utcoffset() == received.utcoffset()
    )
    # Kind and TimeSource are StrEnums: JSON writes them as their plain string values.
    fields: list[Any] = [
        reading.kind,
        [[q.name, q.value, q.unit, q.special] for q in reading.values],
        received_field,
        reading.received.monotonic_ns,
        reading.received.clock_synced,
        reading.time_source,
    ]
    tail: list[Any] = [
        None if same_moment else _utc_field(effective),
        None if is_id_form else reading.natural_key,
        reading.device_time,
        reading.device_seq,
        reading.device_clock_offset_s,
        reading.time_flags,
        reading.status,
        reading.extra,
    ]
    # Trailing empty fields are implied (a plain stream sample has no tail at all).
    while tail and (tail[-1] is None or tail[-1] in ((), {})):
        tail.pop()
    fields += tail
    return _ENCODER.encode(fields)


def _quoted(text: object) -> str | None:
    """JSON for a string (cached), or None for anything else (the caller falls back)."""
    if not isinstance(text, str):
        return None
    hit = _QUOTED.get(text)
    if hit is None:
        if len(_QUOTED) >= _QUOTED_MAX:
            _QUOTED.clear()
        hit = _QUOTED[str(text)] = _ENCODER.encode(str(text))
    return hit


def _quantity_shape(quantity: Quantity) -> tuple[str, str] | None:
    """The JSON around a quantity's value (cached by name, unit, special), or None."""
    name, unit = _quoted(quantity.name), _quoted(quantity.unit)
    special = "null" if quantity.special is None else _quoted(quantity.special)
    if name is None or unit is None or special is None:
        return None
    if len(_SHAPES) >= _QUOTED_MAX:
        _SHAPES.clear()
    shape = _SHAPES[quantity.name, quantity.unit, quantity.special] = (
        f"[{name},",
        f",{unit},{special}]",
    )
    return shape


def _values_json(values: tuple[Quantity, ...]) -> str | None:
    """The values list as the json module writes it, or None for an unusual value."""
    parts: list[str] = []
    for quantity in values:
        shape = _SHAPES.get((quantity.name, quantity.unit, quantity.special))
        if shape is None and (shape := _quantity_shape(quantity)) is None:
            return None
        value = quantity.value
        if type(value) is float and value - value == 0.0:  # NaN and infinities fall back
            number = float.__repr__(value)
        elif value is None:
            number = "null"
        elif type(value) is int:
            number = int.__repr__(value)
        else:
            return None  # bool, subclasses, anything unexpected
        parts.append(f"{shape[0]}{number}{shape[1]}")
    return f"[{','.join(parts)}]"


def _encode_plain_sample(reading: Reading, context_json: str) -> EncodedReading | None:
    """A plain stream sample encoded directly; None when ``reading`` is not one.

    The hot path (tens of thousands a second): produces exactly what
    ``encode_reading_general`` does (a test compares them) for a UTC sample with an
    id-form natural key and nothing in the body's tail.
    """
    received = reading.received
    utc = received.utc
    if (
        reading.device_time is not None
        or reading.device_seq is not None
        or reading.device_clock_offset_s is not None
        or reading.time_flags
        or reading.status
        or reading.extra
        or reading.effective_time is not utc
        or utc.tzinfo is not UTC
        or type(received.monotonic_ns) is not int
        or type(received.clock_synced) is not bool
    ):
        return None
    rid = reading.reading_id
    kind = _ENUM_JSON.get(id(reading.kind)) or _quoted(reading.kind)
    source = _ENUM_JSON.get(id(reading.time_source)) or _quoted(reading.time_source)
    values = _values_json(reading.values)
    if (
        kind is None
        or source is None
        or values is None
        or reading.natural_key != f"{reading.device.device_id}:{reading.kind}:id:{rid}"
    ):
        return None
    received_us = (utc - _EPOCH) // _MICROSECOND
    rid_bytes = rid.bytes
    synced = "true" if received.clock_synced else "false"
    cadence = reading.cadence
    # Identity first: an Enum's hash is Python code, and this runs per reading.
    cadence_code = 1 if cadence is Cadence.CONTINUOUS else CADENCE_CODES[cadence]
    return EncodedReading(
        max(0, received_us).to_bytes(8, "big") + rid_bytes,
        rid_bytes,
        cadence_code,
        context_json,
        f"[{kind},{values},{received_us},{received.monotonic_ns},{synced},{source}]",
    )


def encode_body(reading: Reading) -> str:
    """The per-reading fields as compact JSON (derivable fields stored as null)."""
    is_id_form = reading.natural_key == _id_form_key(reading)
    return _encode_body(reading, is_id_form, _utc_field(reading.received.utc))


def encode_reading_general(reading: Reading, context_json: str) -> EncodedReading:
    """``encode_reading`` for any reading, by way of the json module (the reference)."""
    is_id_form = reading.natural_key == _id_form_key(reading)
    received_field = _utc_field(reading.received.utc)
    return EncodedReading(
        _natural_key_hash(reading, is_id_form, received_field),
        reading.reading_id.bytes,
        CADENCE_CODES[reading.cadence],
        context_json,
        _encode_body(reading, is_id_form, received_field),
    )


def encode_reading(reading: Reading, context_json: str) -> EncodedReading:
    """Everything the INSERT needs; ``context_json`` is ``encode_context`` (cached by caller)."""
    encoded = _encode_plain_sample(reading, context_json)
    return encoded if encoded is not None else encode_reading_general(reading, context_json)


# The body layout, version 1: the JSON list ``_encode_body`` writes, field by field as
# ``BodyFields`` names them. Readers never index a body themselves: they call
# ``body_fields``. A new layout needs a new version here and an outbox migration
# (agent/outbox_schema.py) that rewrites the stored bodies, so one database never holds
# two layouts (a golden test in tests/agent/test_outbox_encoding.py pins this one).
BODY_LAYOUT: Final = 1


class BodyFields(NamedTuple):
    """A stored body's fields as JSON gives them, the omitted tail filled with defaults.

    The default lists and dict are shared between calls: read them, never change them.
    """

    kind: str
    values: list[list[Any]]  # per quantity: [name, value, unit, special]
    received: int | str  # hub receipt: microseconds since the epoch if UTC, else ISO text
    monotonic_ns: int
    clock_synced: bool
    time_source: str
    effective: int | str | None  # None: the same moment as ``received``
    natural_key: str | None  # None: the id form "{device_id}:{kind}:id:{reading_id}"
    device_time: str | None
    device_seq: int | None
    device_clock_offset_s: float | None
    time_flags: list[str]
    status: list[str]
    extra: dict[str, str]


_FIELD_COUNT: Final = len(BodyFields._fields)
# json's own C scanner, called directly: json.loads adds two whitespace regex matches
# and three Python calls per body, as much again as the parse of a short body.
_SCAN: Final[Callable[[str, int], tuple[Any, int]]] = json.scanner.make_scanner(
    json.JSONDecoder()  # type: ignore[arg-type]  # typeshed has the wrong argument type
)


def body_fields(body: str) -> BodyFields:
    """The one decoder of a stored body (layout ``BODY_LAYOUT``).

    Raises:
        ValueError: ``body`` is not JSON, or not a list of this layout's length.
    """
    try:
        fields, end = _SCAN(body, 0)
    except StopIteration:
        fields, end = None, -1
    count = len(fields) if isinstance(fields, list) and end == len(body) else -1
    if not _REQUIRED_FIELDS <= count <= _FIELD_COUNT:
        # Its text holds reading values: never put it in a message that may be logged.
        raise ValueError(f"not an outbox body of layout {BODY_LAYOUT} ({len(body)} characters)")
    if count < _FIELD_COUNT:
        fields.extend(_OPTIONAL_DEFAULTS[count - _REQUIRED_FIELDS :])
    return BodyFields._make(fields)


def utc_from_field(value: int | str) -> datetime:
    """A body's time field (``BodyFields.received`` or ``.effective``) as a datetime."""
    return _utc_from_field(value)


def received_utc_of(body: str) -> datetime:
    """The hub receipt time stored in a body (for health's oldest-pending age)."""
    return _utc_from_field(body_fields(body).received)


def decode_reading(reading_id: bytes, cadence: int, context: ReadingContext, body: str) -> Reading:
    """Rebuild the Reading stored by ``encode_reading``."""
    fields = body_fields(body)
    received = HubTime(
        utc=_utc_from_field(fields.received),
        monotonic_ns=fields.monotonic_ns,
        boot_id=context.boot_id,
        clock_synced=fields.clock_synced,
    )
    rid = uuid.UUID(bytes=reading_id)
    kind = Kind(fields.kind)
    natural_key = fields.natural_key
    if natural_key is None:
        natural_key = f"{context.device.device_id}:{kind}:id:{rid}"
    effective = fields.effective
    return Reading(
        reading_id=rid,
        device=context.device,
        patient=context.patient,
        kind=kind,
        cadence=CADENCES[cadence],
        values=tuple(Quantity(n, v, u, s) for n, v, u, s in fields.values),
        received=received,
        effective_time=received.utc if effective is None else _utc_from_field(effective),
        time_source=TimeSource(fields.time_source),
        natural_key=natural_key,
        driver_version=context.driver_version,
        device_time=fields.device_time,
        device_seq=fields.device_seq,
        device_clock_offset_s=fields.device_clock_offset_s,
        time_flags=tuple(fields.time_flags),
        status=tuple(fields.status),
        extra=dict(fields.extra),
    )


# A pending row as the publisher reads it: (seq, reading_id, cadence code, context id,
# body), in seq order; the context ids point into ``PendingPage.contexts``.
PendingRow: TypeAlias = tuple[int, bytes, int, int, str]


@dataclass(frozen=True, slots=True)
class PendingPage:
    """Pending rows undecoded, with the contexts they name (the publisher's read)."""

    rows: list[PendingRow]
    contexts: Mapping[int, ReadingContext]


def decode_pending(
    rows: Sequence[PendingRow], contexts: Mapping[int, ReadingContext]
) -> list[StoredReading]:
    """``rows`` as StoredReadings (for encoders that need whole Readings)."""
    return [
        StoredReading(
            seq=seq,
            reading=decode_reading(reading_id, cadence, contexts[context], body),
            state="pending",
        )
        for seq, reading_id, cadence, context, body in rows
    ]
