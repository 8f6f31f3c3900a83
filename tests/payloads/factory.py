"""Readings of every kind with fixed ids and times, for golden payload tests."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from agent.clock import HubTime
from agent.payloads import PayloadContext
from agent.readings import (
    Cadence,
    DeviceIdentity,
    Kind,
    PatientBinding,
    Quantity,
    Reading,
    StoredReading,
    make_reading,
)


def wall(text: str) -> datetime:
    """A device's naive wall-clock time, as a device sends it (no zone)."""
    return datetime.fromisoformat(text)


BOOT = "0b7c1c2e-5f3a-4c55-9a21-3f1e2d4c5b6a"
RECEIVED_UTC = datetime(2026, 11, 27, 9, 30, 15, 250_000, tzinfo=UTC)
PATIENT = PatientBinding("patient-0042", 3)
CONTEXT = PayloadContext(
    hub_id="hub-7",
    agent_version="0.1.0",
    hub_serial="10000000a1b2c3d4",
    timezone_name="Europe/London",
)
DEVICES = {
    Kind.SPO2: DeviceIdentity(
        "oximeter", "nonin3150", "00:1C:05:AA:BB:CC", "Nonin", "3150", "501234567", "1.2.3"
    ),
    Kind.BLOOD_PRESSURE: DeviceIdentity(
        "bp-cuff",
        "ble_bp",
        "A4:C1:38:01:02:03",
        "Omron",
        "BP7450",
        "20261127001",
        "2.0",
        "FE-ED-AB-EE-DE-AD-77-C3",
    ),
    Kind.BODY_TEMPERATURE: DeviceIdentity("thermometer", "ble_hts", "C0:FF:EE:00:00:01"),
    Kind.HEART_RATE: DeviceIdentity("chest-strap", "ble_hrs", "D0:0D:00:00:00:02", "Polar", "H10"),
    Kind.BODY_WEIGHT: DeviceIdentity("scale", "ble_wss", "E0:0E:00:00:00:03", "A&D", "UC-352BLE"),
    Kind.GLUCOSE: DeviceIdentity("glucometer", "ble_gls", "F0:0F:00:00:00:04", "Roche", "Guide"),
}
SAMPLES: dict[Kind, dict[str, Any]] = {
    Kind.SPO2: {
        "cadence": Cadence.CONTINUOUS,
        "values": (
            Quantity("spo2", 97.0, "%"),
            Quantity("pulse_rate", 72.0, "/min"),
            Quantity("perfusion_index", 1.5, "%"),
        ),
    },
    Kind.BLOOD_PRESSURE: {
        "values": (
            Quantity("systolic", 128.0, "mm[Hg]"),
            Quantity("diastolic", 82.0, "mm[Hg]"),
            Quantity("mean_arterial_pressure", 97.3, "mm[Hg]"),
            Quantity("pulse_rate", 70.0, "/min"),
        ),
        "device_time": wall("2026-11-27T09:28:00"),
        "device_clock_offset_s": 3.0,
        "status": ("irregular_pulse",),
    },
    Kind.BODY_TEMPERATURE: {
        "values": (Quantity("body_temperature", 37.2, "Cel"),),
        "device_time": wall("2026-11-27T09:29:30"),
        "extra": {"temperature_type": "ear"},
    },
    Kind.HEART_RATE: {
        "cadence": Cadence.CONTINUOUS,
        "values": (
            Quantity("heart_rate", 64.0, "/min"),
            Quantity("rr_interval", 0.938, "s"),
            Quantity("energy_expended", 12.0, "kJ"),
        ),
    },
    Kind.BODY_WEIGHT: {
        "values": (
            Quantity("body_weight", 72.4, "kg"),
            Quantity("body_height", 1.75, "m"),
            Quantity("bmi", 23.6, "kg/m2"),
        ),
        "device_time": wall("2026-11-27T09:25:00"),
    },
    Kind.GLUCOSE: {
        "values": (Quantity("glucose", 5.6, "mmol/L"),),
        "device_time": wall("2026-11-27T07:45:00"),
        "device_seq": 42,
    },
}


def hub_time(
    utc: datetime = RECEIVED_UTC,
    *,
    mono_ns: int = 5_000_000_000,
    synced: bool = True,
    boot_id: str = BOOT,
) -> HubTime:
    """A hub moment with the given wall time, monotonic time and sync state."""
    return HubTime(utc=utc, monotonic_ns=mono_ns, boot_id=boot_id, clock_synced=synced)


def reading_of(
    kind: Kind, *, number: int = 0, received: HubTime | None = None, **overrides: Any
) -> Reading:
    """The sample reading of ``kind`` with a reading_id fixed by kind and ``number``."""
    sample = {"cadence": Cadence.SPOT, **SAMPLES[kind], **overrides}
    reading = make_reading(
        device=DEVICES[kind],
        patient=PATIENT,
        kind=kind,
        received=received or hub_time(),
        driver_version="1.0.0",
        timezone_name=CONTEXT.timezone_name,
        **sample,
    )
    fixed_id = uuid.uuid5(uuid.NAMESPACE_URL, f"wardlink-test:{kind}:{number}")
    return dataclasses.replace(reading, reading_id=fixed_id)


def stored(reading: Reading, seq: int = 1001) -> StoredReading:
    """The reading as the outbox hands it to the publisher."""
    return StoredReading(seq=seq, reading=reading, state="pending")


def spo2_stream(count: int, *, first_seq: int = 5000, **overrides: Any) -> list[StoredReading]:
    """A 1 Hz SpO2 stream from the oximeter, as the outbox would batch it."""
    return [
        stored(
            reading_of(
                Kind.SPO2,
                number=i,
                received=hub_time(
                    RECEIVED_UTC + timedelta(seconds=i), mono_ns=5_000_000_000 + i * 1_000_000_000
                ),
                **overrides,
            ),
            seq=first_seq + i,
        )
        for i in range(count)
    ]
