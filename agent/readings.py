"""The one shape every driver emits: a ``Reading``.

A reading is made once, at capture, and never changes: its ``reading_id`` (random UUID)
is the idempotency key the backend dedupes on, and its ``natural_key`` is what makes a
device's re-sent stored record (BP cuffs and glucose meters re-send) the same reading
rather than a new one. The patient binding is copied into the reading at capture, so a
reading stays with the patient it was taken from even if the hub is later re-bound.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from agent.clock import HubTime, TimeSource, derive_effective_time

SCHEMA_VERSION: Final = 1


class Kind(StrEnum):
    """What was measured. One reading can carry several quantities (e.g. BP + pulse)."""

    SPO2 = "spo2"
    BLOOD_PRESSURE = "blood_pressure"
    BODY_TEMPERATURE = "body_temperature"
    HEART_RATE = "heart_rate"
    BODY_WEIGHT = "body_weight"
    GLUCOSE = "glucose"


# The quantity names every driver uses, and the UCUM units each may carry. Payload
# builders map these (with the Kind) to MDC and LOINC codes; keep this the one list.
QUANTITY_UNITS: Final[dict[str, frozenset[str]]] = {
    "spo2": frozenset({"%"}),
    "pulse_rate": frozenset({"/min"}),
    "perfusion_index": frozenset({"%"}),
    "systolic": frozenset({"mm[Hg]", "kPa"}),
    "diastolic": frozenset({"mm[Hg]", "kPa"}),
    "mean_arterial_pressure": frozenset({"mm[Hg]", "kPa"}),
    "body_temperature": frozenset({"Cel", "[degF]"}),
    "heart_rate": frozenset({"/min"}),
    "rr_interval": frozenset({"s"}),
    "energy_expended": frozenset({"kJ"}),
    "body_weight": frozenset({"kg", "[lb_av]"}),
    "body_height": frozenset({"m", "[in_i]"}),
    "bmi": frozenset({"kg/m2"}),
    "glucose": frozenset({"mg/dL", "mmol/L"}),
}


class Cadence(StrEnum):
    """Spot measurements are taken by the patient; continuous ones stream.

    Under storage pressure continuous streams are thinned before any spot
    measurement is dropped (DESIGN.md, delivery guarantee 6).
    """

    SPOT = "spot"
    CONTINUOUS = "continuous"


@dataclass(frozen=True, slots=True)
class Quantity:
    """One measured value with its UCUM unit.

    ``value`` is None when the device sent a special value (NaN, NRes, +/-INF) or a
    "missing" marker; ``special`` then says which. A special is never a number.
    """

    name: str
    value: float | None
    unit: str
    special: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """Who produced the reading: the configured id plus what the device says of itself."""

    device_id: str
    driver: str
    address: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    serial_number: str | None = None
    firmware: str | None = None
    system_id: str | None = None


@dataclass(frozen=True, slots=True)
class PatientBinding:
    """The patient this hub's devices are bound to, and which version of that binding."""

    patient_id: str
    binding_version: int


@dataclass(frozen=True, slots=True)
class Reading:
    """An immutable, captured measurement. See the module docstring."""

    reading_id: uuid.UUID
    device: DeviceIdentity
    patient: PatientBinding
    kind: Kind
    cadence: Cadence
    values: tuple[Quantity, ...]
    received: HubTime
    effective_time: datetime
    time_source: TimeSource
    natural_key: str
    driver_version: str
    device_time: str | None = None
    device_seq: int | None = None
    device_clock_offset_s: float | None = None
    time_flags: tuple[str, ...] = ()
    status: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)

    def value(self, name: str) -> Quantity | None:
        """The quantity called ``name``, if the reading has one."""
        return next((q for q in self.values if q.name == name), None)


@dataclass(frozen=True, slots=True)
class StoredReading:
    """A reading as the outbox holds it: with its per-hub ``seq`` and delivery state."""

    seq: int
    reading: Reading
    state: str  # "pending" | "sent" | "delivered" | "rejected"
    reject_reason: str | None = None


def natural_key_for(
    device_id: str,
    kind: Kind,
    values: tuple[Quantity, ...],
    device_seq: int | None,
    device_time: str | None,
    reading_id: uuid.UUID,
) -> str:
    """The dedup key: a device record re-sent later must map to the same key.

    A device sequence number (glucose) or the device's own timestamp (BP, weight,
    temperature) identifies a stored record together with its values. A stream sample
    with neither is unique by construction, so its key is its reading_id.
    """
    if device_seq is None and device_time is None:
        return f"{device_id}:{kind}:id:{reading_id}"
    body = json.dumps(
        [device_seq, device_time, [[q.name, q.value, q.unit, q.special] for q in values]],
        separators=(",", ":"),
    )
    digest = hashlib.sha256(body.encode()).hexdigest()[:32]
    return f"{device_id}:{kind}:{digest}"


def make_reading(
    *,
    device: DeviceIdentity,
    patient: PatientBinding,
    kind: Kind,
    cadence: Cadence,
    values: tuple[Quantity, ...],
    received: HubTime,
    driver_version: str,
    device_time: datetime | None = None,
    device_seq: int | None = None,
    device_clock_offset_s: float | None = None,
    device_clock_unset: bool = False,
    timezone_name: str = "UTC",
    status: tuple[str, ...] = (),
    extra: dict[str, str] | None = None,
) -> Reading:
    """Build a Reading with a fresh reading_id, derived effective time and natural key.

    ``device_time`` is the device's wall-clock timestamp as sent (naive, device-local);
    it is kept verbatim and separately from the hub's receipt time.
    """
    reading_id = uuid.uuid4()
    device_time_text = device_time.isoformat() if device_time is not None else None
    effective, source, flags = derive_effective_time(
        received=received,
        device_time=device_time,
        device_clock_offset_s=device_clock_offset_s,
        device_clock_unset=device_clock_unset,
        timezone_name=timezone_name,
    )
    return Reading(
        reading_id=reading_id,
        device=device,
        patient=patient,
        kind=kind,
        cadence=cadence,
        values=values,
        received=received,
        effective_time=effective,
        time_source=source,
        natural_key=natural_key_for(
            device.device_id, kind, values, device_seq, device_time_text, reading_id
        ),
        driver_version=driver_version,
        device_time=device_time_text,
        device_seq=device_seq,
        device_clock_offset_s=device_clock_offset_s,
        time_flags=flags,
        status=status,
        extra=dict(extra or {}),
    )


def reading_to_dict(reading: Reading) -> dict[str, Any]:
    """A JSON-ready dict; the outbox stores this and ``reading_from_dict`` reverses it."""
    return {
        "v": SCHEMA_VERSION,
        "reading_id": str(reading.reading_id),
        "device": {k: getattr(reading.device, k) for k in DeviceIdentity.__slots__},
        "patient": {
            "patient_id": reading.patient.patient_id,
            "binding_version": reading.patient.binding_version,
        },
        "kind": reading.kind.value,
        "cadence": reading.cadence.value,
        "values": [[q.name, q.value, q.unit, q.special] for q in reading.values],
        "received": {
            "utc": reading.received.utc.isoformat(),
            "monotonic_ns": reading.received.monotonic_ns,
            "boot_id": reading.received.boot_id,
            "clock_synced": reading.received.clock_synced,
        },
        "effective_time": reading.effective_time.isoformat(),
        "time_source": reading.time_source.value,
        "natural_key": reading.natural_key,
        "driver_version": reading.driver_version,
        "device_time": reading.device_time,
        "device_seq": reading.device_seq,
        "device_clock_offset_s": reading.device_clock_offset_s,
        "time_flags": list(reading.time_flags),
        "status": list(reading.status),
        "extra": reading.extra,
    }


def reading_from_dict(data: dict[str, Any]) -> Reading:
    """Rebuild a Reading stored by ``reading_to_dict``."""
    received = data["received"]
    return Reading(
        reading_id=uuid.UUID(data["reading_id"]),
        device=DeviceIdentity(**data["device"]),
        patient=PatientBinding(**data["patient"]),
        kind=Kind(data["kind"]),
        cadence=Cadence(data["cadence"]),
        values=tuple(Quantity(n, v, u, s) for n, v, u, s in data["values"]),
        received=HubTime(
            utc=datetime.fromisoformat(received["utc"]),
            monotonic_ns=received["monotonic_ns"],
            boot_id=received["boot_id"],
            clock_synced=received["clock_synced"],
        ),
        effective_time=datetime.fromisoformat(data["effective_time"]),
        time_source=TimeSource(data["time_source"]),
        natural_key=data["natural_key"],
        driver_version=data["driver_version"],
        device_time=data["device_time"],
        device_seq=data["device_seq"],
        device_clock_offset_s=data["device_clock_offset_s"],
        time_flags=tuple(data["time_flags"]),
        status=tuple(data["status"]),
        extra=dict(data["extra"]),
    )
