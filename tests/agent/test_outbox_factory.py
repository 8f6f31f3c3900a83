"""Readings for the outbox tests (shared by test_outbox*.py and bench/capture.py)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Final

from agent.clock import HubTime
from agent.readings import (
    Cadence,
    DeviceIdentity,
    Kind,
    PatientBinding,
    Quantity,
    Reading,
    make_reading,
)

T0: Final = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
OXIMETER: Final = DeviceIdentity(
    device_id="oximeter-1",
    driver="nonin3150",
    address="AA:BB:CC:DD:EE:01",
    manufacturer="Nonin",
    model="3150",
    serial_number="501234567",
    firmware="1.2.3",
)
CUFF: Final = DeviceIdentity(device_id="bp-cuff", driver="ble_bps", address="AA:BB:CC:DD:EE:02")
PATIENT: Final = PatientBinding(patient_id="pt-9434765919", binding_version=3)
_MONO = itertools.count(1_000_000_000, 1_000_000)


class StepClock:
    """An injected hub clock that only moves when told (for state-change stamps)."""

    def __init__(self, start: datetime = T0) -> None:
        self.utc = start

    def now(self) -> HubTime:
        return HubTime(utc=self.utc, monotonic_ns=next(_MONO), boot_id="boot-1", clock_synced=True)

    def advance(self, seconds: float) -> None:
        self.utc += timedelta(seconds=seconds)


def hub_time(offset_s: float = 0.0) -> HubTime:
    return HubTime(
        utc=T0 + timedelta(seconds=offset_s),
        monotonic_ns=next(_MONO),
        boot_id="boot-1",
        clock_synced=True,
    )


def stream_sample(i: int = 0, spo2: float = 97.0) -> Reading:
    """A continuous SpO2 sample: no device record id, so its natural key is its own id."""
    return make_reading(
        device=OXIMETER,
        patient=PATIENT,
        kind=Kind.SPO2,
        cadence=Cadence.CONTINUOUS,
        values=(Quantity("spo2", spo2, "%"), Quantity("pulse_rate", 72.0, "/min")),
        received=hub_time(i),
        driver_version="0.1.0",
    )


def bp_record(minute: int, systolic: float = 128.0, offset_s: float = 0.0) -> Reading:
    """A stored cuff record: the device's own timestamp makes it the same record if re-sent."""
    return make_reading(
        device=CUFF,
        patient=PATIENT,
        kind=Kind.BLOOD_PRESSURE,
        cadence=Cadence.SPOT,
        values=(
            Quantity("systolic", systolic, "mm[Hg]"),
            Quantity("diastolic", 82.0, "mm[Hg]"),
            Quantity("pulse_rate", None, "/min", special="NaN"),
        ),
        received=hub_time(offset_s),
        driver_version="0.1.0",
        # Device clocks send naive wall time; the driver reads it in the patient's zone.
        device_time=datetime(2026, 11, 27, 7, 0) + timedelta(minutes=minute),  # noqa: DTZ001
        timezone_name="Europe/London",
        status=("irregular_pulse",),
        extra={"cuff_fit": "ok"},
    )
