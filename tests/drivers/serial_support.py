"""Helpers for the serial driver tests: a recording reporter and a running driver."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.clock import Clock, SystemClock
from agent.errors import DeviceError
from agent.outbox import Outbox
from agent.readings import DeviceIdentity, PatientBinding
from drivers.base import DeviceState, DriverContext
from drivers.emulators.serial import PtySerialDevice
from drivers.serial.driver import SerialOximeterDriver, build
from drivers.serial.settings import SerialOximeterSettings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from agent.readings import StoredReading
    from drivers.base import ReadingSink

PATIENT = PatientBinding("PATIENT-TEST-1", 1)


@dataclass
class RecordingReporter:
    """Our DeviceReporter seam, recording what the driver reports."""

    states: list[tuple[DeviceState, str | None]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    identities: list[DeviceIdentity] = field(default_factory=list)
    clock_offsets: list[float] = field(default_factory=list)

    def set_state(self, state: DeviceState, reason: str | None = None) -> None:
        self.states.append((state, reason))

    def set_identity(self, identity: DeviceIdentity) -> None:
        self.identities.append(identity)

    def set_battery(self, percent: int) -> None:
        raise AssertionError("serial oximeters report no battery level")

    def set_signal(self, rssi_dbm: int) -> None:
        raise AssertionError("serial oximeters report no RSSI")

    def set_clock_offset(self, offset_s: float) -> None:
        self.clock_offsets.append(offset_s)

    def count(self, counter: str, n: int = 1) -> None:
        self.counters[counter] = self.counters.get(counter, 0) + n

    @property
    def last_state(self) -> DeviceState | None:
        return self.states[-1][0] if self.states else None


@dataclass
class Rig:
    """An emulated device, the driver task, its reporter and a real outbox."""

    device: PtySerialDevice
    outbox: Outbox
    reporter: RecordingReporter
    driver_task: asyncio.Task[None]
    driver: SerialOximeterDriver

    async def readings(self) -> list[StoredReading]:
        return await self.outbox.list_readings(state="pending", limit=100_000)


def settings_for(port: Path, protocol: str, **extra: Any) -> SerialOximeterSettings:
    return SerialOximeterSettings.model_validate(
        {
            "id": "oximeter",
            "driver": "serial-oximeter",
            "port": port,
            "protocol": protocol,
            "interval_s": 0.2,
        }
        | extra
    )


def device_for(protocol: str, tmp_path: Path, **options: Any) -> PtySerialDevice:
    """An emulator at a rate that fills 0.2 s intervals quickly, behind a by-id link."""
    link = tmp_path / "by-id-oximeter"
    if protocol == "nonin-df13":  # a spot check every simulated second, 10 a second
        return PtySerialDevice(protocol, link=link, speed=10, spot_period_s=1.0, **options)
    if protocol in ("nonin-df2", "nonin-df7"):
        return PtySerialDevice(protocol, link=link, speed=4, **options)  # 300 frames/s
    if protocol in ("contec-v5", "contec-v7"):
        return PtySerialDevice(protocol, link=link, **options)  # the real 60 packages/s
    return PtySerialDevice(protocol, link=link, speed=10, **options)


@contextlib.asynccontextmanager
async def rig(
    tmp_path: Path,
    protocol: str,
    *,
    device: PtySerialDevice | None = None,
    outbox: Outbox | None = None,
    sink: ReadingSink | None = None,
    clock: Clock | None = None,
    **settings: Any,
) -> AsyncIterator[Rig]:
    """Run an emulator and the driver on it into a real outbox; tear all down after."""
    device = device or PtySerialDevice(protocol, link=tmp_path / "by-id-oximeter", speed=10)
    device.plug()
    device_task = asyncio.create_task(device.run())
    own_outbox = outbox is None
    box = outbox or await Outbox.open(tmp_path / "outbox.db")
    reporter = RecordingReporter()
    ctx = DriverContext(
        sink=sink or box,
        clock=clock or SystemClock(),
        reporter=reporter,
        patient=PATIENT,
        timezone_name="Europe/London",
    )
    driver = build(settings_for(device.port, protocol, **settings), ctx)
    task = asyncio.create_task(driver.run())
    try:
        yield Rig(device, box, reporter, task, driver)
    finally:
        for t in (task, device_task):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, DeviceError):
                await t
        await driver.close()
        device.close()
        if own_outbox:
            await box.close()
