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
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple

from agent.clock import HubTime, TimeSource
from agent.readings import Cadence, DeviceIdentity, Kind, PatientBinding, Quantity, Reading

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
_JSON_BOOL: Final = {True: "true", False: "false"}


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
    body: str  # ASCII only (JSON with escapes), so its length in characters is in bytes


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


def _number(value: object) -> str | None:
    """JSON for a quantity's value as the json module writes it, or None to fall back."""
    if value is None:
        return "null"
    if type(value) is float:
        # NaN and infinities (not JSON numbers) go the general way.
        return float.__repr__(value) if value - value == 0.0 else None
    if type(value) is int:
        return int.__repr__(value)
    return None  # bool, subclasses, anything unexpected


def _quantity_json(quantity: Quantity) -> str | None:
    name, unit, number = _quoted(quantity.name), _quoted(quantity.unit), _number(quantity.value)
    special = "null" if quantity.special is None else _quoted(quantity.special)
    if name is None or unit is None or number is None or special is None:
        return None
    return f"[{name},{number},{unit},{special}]"


def _plain_sample_body(reading: Reading, received_field: int | str) -> str | None:
    """The body of a plain stream sample, formatted directly; None when not that shape.

    Produces exactly the text ``_encode_body`` would (a test compares them) for a reading
    whose body has no tail; the general path handles everything else.
    """
    received = reading.received
    if (
        reading.device_time is not None
        or reading.device_seq is not None
        or reading.device_clock_offset_s is not None
        or reading.time_flags
        or reading.status
        or reading.extra
        or reading.effective_time is not received.utc
        or type(received_field) is not int
        or type(received.monotonic_ns) is not int
        or type(received.clock_synced) is not bool
    ):
        return None
    kind, source = _quoted(reading.kind), _quoted(reading.time_source)
    values = [_quantity_json(q) for q in reading.values]
    if kind is None or source is None or None in values:
        return None
    return (
        f"[{kind},[{','.join(values)}],{received_field},"  # type: ignore[arg-type]
        f"{received.monotonic_ns},{_JSON_BOOL[received.clock_synced]},{source}]"
    )


def encode_body(reading: Reading) -> str:
    """The per-reading fields as compact JSON (derivable fields stored as null)."""
    is_id_form = reading.natural_key == _id_form_key(reading)
    return _encode_body(reading, is_id_form, _utc_field(reading.received.utc))


def encode_reading(reading: Reading, context_json: str) -> EncodedReading:
    """Everything the INSERT needs; ``context_json`` is ``encode_context`` (cached by caller)."""
    is_id_form = reading.natural_key == _id_form_key(reading)
    received_field = _utc_field(reading.received.utc)
    body = _plain_sample_body(reading, received_field) if is_id_form else None
    if body is None:
        body = _encode_body(reading, is_id_form, received_field)
    return EncodedReading(
        _natural_key_hash(reading, is_id_form, received_field),
        reading.reading_id.bytes,
        CADENCE_CODES[reading.cadence],
        context_json,
        body,
    )


def received_utc_of(body: str) -> datetime:
    """The hub receipt time stored in a body (for health's oldest-pending age)."""
    return _utc_from_field(json.loads(body)[2])


def decode_reading(reading_id: bytes, cadence: int, context: ReadingContext, body: str) -> Reading:
    """Rebuild the Reading stored by ``encode_reading``."""
    fields: list[Any] = json.loads(body)
    fields.extend(_OPTIONAL_DEFAULTS[len(fields) - _REQUIRED_FIELDS :])
    kind, values, received_utc, monotonic_ns, synced, time_source, effective = fields[:7]
    natural_key, device_time, device_seq, offset_s, flags, status, extra = fields[7:]
    received = HubTime(
        utc=_utc_from_field(received_utc),
        monotonic_ns=monotonic_ns,
        boot_id=context.boot_id,
        clock_synced=synced,
    )
    rid = uuid.UUID(bytes=reading_id)
    kind_value = Kind(kind)
    if natural_key is None:
        natural_key = f"{context.device.device_id}:{kind_value}:id:{rid}"
    return Reading(
        reading_id=rid,
        device=context.device,
        patient=context.patient,
        kind=kind_value,
        cadence=CADENCES[cadence],
        values=tuple(Quantity(n, v, u, s) for n, v, u, s in values),
        received=received,
        effective_time=received.utc if effective is None else _utc_from_field(effective),
        time_source=TimeSource(time_source),
        natural_key=natural_key,
        driver_version=context.driver_version,
        device_time=device_time,
        device_seq=device_seq,
        device_clock_offset_s=offset_s,
        time_flags=tuple(flags),
        status=tuple(status),
        extra=dict(extra),
    )
