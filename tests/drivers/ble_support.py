"""Shared pieces for the BLE driver tests: a recording reporter, a context, payloads."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from agent.clock import SystemClock
from agent.outbox import Outbox
from agent.readings import PatientBinding
from drivers._codecs import bp, gls, hrs
from drivers._codecs.ieee11073 import DateTimeFields, MedFloat
from drivers.base import DeviceReporter, DeviceState, DriverContext, ReadingSink
from drivers.ble.driver import build
from drivers.emulators import ble_payloads
from drivers.emulators.ble import BleWorld

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from agent.clock import Clock
    from agent.readings import DeviceIdentity, Reading
    from drivers.ble.driver import BleDriver
    from drivers.emulators.ble_peripherals import EmulatedPeripheral

PATIENT = PatientBinding(patient_id="patient-test-1", binding_version=3)


@dataclass
class RecordingReporter:
    """A ``DeviceReporter`` that remembers everything it was told."""

    states: list[tuple[DeviceState, str | None]] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)
    identity: DeviceIdentity | None = None
    battery: int | None = None
    rssi: int | None = None
    clock_offset_s: float | None = None

    def set_state(self, state: DeviceState, reason: str | None = None) -> None:
        self.states.append((state, reason))

    def set_identity(self, identity: DeviceIdentity) -> None:
        self.identity = identity

    def set_battery(self, percent: int) -> None:
        self.battery = percent

    def set_signal(self, rssi_dbm: int) -> None:
        self.rssi = rssi_dbm

    def set_clock_offset(self, offset_s: float) -> None:
        self.clock_offset_s = offset_s

    def count(self, counter: str, n: int = 1) -> None:
        self.counters[counter] += n


def make_ctx(
    sink: ReadingSink, reporter: DeviceReporter, clock: Clock | None = None
) -> DriverContext:
    return DriverContext(
        sink=sink,
        clock=clock or SystemClock(),
        reporter=reporter,
        patient=PATIENT,
        timezone_name="Europe/London",
    )


def bp_payload(systolic: int, diastolic: int, minute: int, user_id: int | None = None) -> bytes:
    """A BP record with its own device timestamp (what makes re-sends dedupe)."""
    return ble_payloads.encode_bp_measurement(
        bp.BloodPressureMeasurement(
            systolic=MedFloat.of(systolic),
            diastolic=MedFloat.of(diastolic),
            mean_arterial_pressure=MedFloat.of((systolic + 2 * diastolic) // 3),
            unit="mmHg",
            timestamp=DateTimeFields(2026, 11, 26, 8, minute, 0),
            pulse_rate=MedFloat.of(64),
            user_id=user_id,
        )
    )


def hr_payload(bpm: int) -> bytes:
    return ble_payloads.encode_heart_rate_measurement(
        hrs.HeartRateMeasurement(heart_rate=bpm, sensor_contact_supported=True, sensor_contact=True)
    )


def glucose_payload(sequence: int, mg_dl: int, *, context_follows: bool = False) -> bytes:
    return ble_payloads.encode_glucose_measurement(
        gls.GlucoseMeasurement(
            sequence_number=sequence,
            base_time=DateTimeFields(2026, 11, 26, 7, sequence % 60, 0),
            time_offset_minutes=0,
            concentration=MedFloat.of(f"{mg_dl}e-5"),
            unit="kg/L",
            type_code=1,
            sample_location_code=1,
            context_follows=context_follows,
        )
    )


def glucose_context(sequence: int) -> bytes:
    return ble_payloads.encode_glucose_context(gls.GlucoseContext(sequence_number=sequence, meal=1))


async def wait_until(predicate: object, timeout_s: float = 10.0) -> None:
    """Poll a condition on the event loop (the radio is in-process; this is quick)."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.01)


@pytest.fixture(name="world")
async def world_fixture() -> AsyncIterator[BleWorld]:
    """An in-process radio with the hub's central scanning."""
    radio = BleWorld()
    await radio.start()
    yield radio
    await radio.close()


@pytest.fixture(name="outbox")
async def outbox_fixture(tmp_path: Path) -> AsyncIterator[Outbox]:
    """A real Outbox (SQLite, WAL) in the test's directory."""
    box = await Outbox.open(tmp_path / "outbox.db")
    yield box
    await box.close()


class Harness:
    """A driver running as a task against the world, with a real Outbox and a reporter."""

    def __init__(
        self,
        world: BleWorld,
        tmp_path: Path,
        outbox: Outbox,
        settings: Any,
        clock: Clock | None = None,
    ) -> None:
        self.reporter = RecordingReporter()
        self.outbox = outbox
        self.make = functools.partial(
            build,
            settings,
            make_ctx(outbox, self.reporter, clock),
            link_factory=world.link_factory,
            scanner_factory=world.scanner_factory,
            state_dir=tmp_path / "state",
        )
        self.driver: BleDriver = self.make()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.driver = self.make()
        self.task = asyncio.get_running_loop().create_task(self.driver.run())

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.driver.close()

    async def one_session(self, count: int, device: EmulatedPeripheral) -> None:
        """Run until ``count`` readings are stored and the device is released, then stop."""
        self.start()
        try:
            await self.wait_for_count(count)
            await wait_until(lambda: not device.is_connected)
        finally:
            await self.stop()

    async def systolics(self) -> list[float]:
        found = [r.value("systolic") for r in await self.readings()]
        return sorted(float(q.value) for q in found if q is not None and q.value is not None)

    async def readings(self) -> list[Reading]:
        return [r.reading for r in await self.outbox.list_readings(state="pending")]

    async def wait_for_count(self, n: int, *, at_least: bool = False) -> None:
        async with asyncio.timeout(10):
            while True:
                count = len(await self.readings())
                if count == n or (at_least and count > n):
                    return
                await asyncio.sleep(0.02)

    def state_names(self) -> list[str]:
        return [s.value for s, _ in self.reporter.states]
