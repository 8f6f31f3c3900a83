"""`wardlink simulate ble PROFILE [--transport T]`: run an emulated BLE health device.

Without a transport, the device and the hub's BLE driver run together in this process
over bumble's in-process LocalLink, and each captured reading is printed: a quick
end-to-end look at one profile with nothing else installed. With a bumble transport
(e.g. ``vhci`` on a Linux box with /dev/vhci, or ``tcp-client:127.0.0.1:9001``) the
device is served on that controller for a real BlueZ + bleak hub to find.

``demo_peripheral`` is also what ``wardlink demo`` uses to populate its radio.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Final

from agent.clock import SystemClock
from agent.readings import PatientBinding
from drivers._codecs import bp, gls, hrs, hts, plx, wss
from drivers._codecs.ieee11073 import DateTimeFields, MedFloat
from drivers.base import CaptureResult, DeviceState, DriverContext
from drivers.ble.settings import (
    BleBloodPressureSettings,
    BleGlucoseSettings,
    BleHeartRateSettings,
    BlePulseOximeterSettings,
    BleSettings,
    BleThermometerSettings,
    BleWeightScaleSettings,
    EpisodicBleSettings,
)
from drivers.emulators import ble_payloads
from drivers.emulators.ble import BleWorld
from drivers.emulators.ble_glucose_meter import GlucoseMeter, MeterRecord
from drivers.emulators.ble_peripherals import (
    DeviceInfo,
    EmulatedPeripheral,
    StoredRecordsPeripheral,
    StreamingPeripheral,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from agent.readings import DeviceIdentity, Reading

PROFILE_NAMES: Final = (
    "blood-pressure",
    "thermometer",
    "weight-scale",
    "glucose",
    "pulse-oximeter",
    "pulse-oximeter-continuous",
    "heart-rate",
)
DEMO_ADDRESS: Final = "C0:FF:EE:00:00:01"
_EX_USAGE: Final = 64
_EX_UNAVAILABLE: Final = 69


def _stamp(minutes_ago: int) -> DateTimeFields:
    # Device clocks are local wall time without a zone: the host's local time is right here.
    return DateTimeFields.from_datetime(datetime.now() - timedelta(minutes=minutes_ago))  # noqa: DTZ005


def _stored(profile: str, address: str, info: DeviceInfo) -> StoredRecordsPeripheral:
    table = {
        "blood-pressure": ("1810", "2A35"),
        "thermometer": ("1809", "2A1C"),
        "weight-scale": ("181D", "2A9D"),
        "pulse-oximeter": ("1822", "2A5E"),
    }
    service, measurement = table[profile]
    return StoredRecordsPeripheral(
        address, f"Demo {profile}", service_uuid=service, measurement_uuid=measurement, info=info
    )


def _records(profile: str) -> list[bytes]:
    if profile == "blood-pressure":
        return [
            ble_payloads.encode_bp_measurement(
                bp.BloodPressureMeasurement(
                    MedFloat.of(sys_),
                    MedFloat.of(dia),
                    MedFloat.of(map_),
                    "mmHg",
                    timestamp=_stamp(age),
                    pulse_rate=MedFloat.of(68),
                )
            )
            for sys_, dia, map_, age in ((128, 82, 97, 90), (124, 79, 94, 5))
        ]
    if profile == "thermometer":
        return [
            ble_payloads.encode_temperature_measurement(
                hts.TemperatureMeasurement(MedFloat.of("36.8"), "C", timestamp=_stamp(3))
            )
        ]
    if profile == "weight-scale":
        return [
            ble_payloads.encode_weight_measurement(
                wss.WeightMeasurement("kg", Decimal("72.45"), timestamp=_stamp(2))
            )
        ]
    return [
        ble_payloads.encode_plx_spot_check(
            plx.PlxSpotCheck(MedFloat.of(96), MedFloat.of(72), timestamp=_stamp(1))
        )
    ]


def demo_peripheral(profile: str, address: str = DEMO_ADDRESS) -> EmulatedPeripheral:
    """An emulated device of ``profile`` (one of ``PROFILE_NAMES``) with sample data."""
    info = DeviceInfo(serial_number=f"DEMO-{profile.upper()[:4]}-0001")
    if profile == "glucose":
        meter = GlucoseMeter(address, "Demo glucose", info)
        for seq, mg_dl in ((1, 98), (2, 142)):
            measurement = gls.GlucoseMeasurement(
                seq, _stamp(60 - seq), 0, MedFloat.of(f"{mg_dl}e-5"), "kg/L", 1, 1
            )
            meter.add_record(MeterRecord(seq, ble_payloads.encode_glucose_measurement(measurement)))
        return meter
    if profile in {"heart-rate", "pulse-oximeter-continuous"}:
        return _streamer(profile, address, info)
    device = _stored(profile, address, info)
    device.records.extend(_records(profile))
    return device


def _streamer(profile: str, address: str, info: DeviceInfo) -> StreamingPeripheral:
    if profile == "heart-rate":
        payloads = [
            ble_payloads.encode_heart_rate_measurement(
                hrs.HeartRateMeasurement(bpm, sensor_contact_supported=True, sensor_contact=True)
            )
            for bpm in (71, 72, 74, 73, 72)
        ]
        return StreamingPeripheral(
            address,
            "Demo HR",
            service_uuid="180D",
            measurement_uuid="2A37",
            payloads=payloads,
            info=info,
        )
    payloads = [
        ble_payloads.encode_plx_continuous(plx.PlxContinuous(MedFloat.of(s), MedFloat.of(p)))
        for s, p in ((97, 70), (96, 71), (97, 72))
    ]
    return StreamingPeripheral(
        address,
        "Demo oximeter",
        service_uuid="1822",
        measurement_uuid="2A5F",
        payloads=payloads,
        info=info,
    )


@dataclass
class PrintingSink:
    """Prints each reading (emulated data only; never used with a patient's device)."""

    seen: set[str] = field(default_factory=set)

    async def capture(self, readings: Sequence[Reading]) -> CaptureResult:
        """Print new readings; re-sent records count as duplicates."""
        stored = 0
        for reading in readings:
            if reading.natural_key in self.seen:
                continue
            self.seen.add(reading.natural_key)
            stored += 1
            values = ", ".join(f"{q.name}={q.value} {q.unit}" for q in reading.values)
            sys.stdout.write(f"{reading.effective_time:%H:%M:%S} {reading.kind}: {values}\n")
        return CaptureResult(stored=stored, duplicates=len(readings) - stored)


class QuietReporter:
    """Reports device state changes on stderr; ignores the rest."""

    def set_state(self, state: DeviceState, reason: str | None = None) -> None:
        """Print the new state."""
        sys.stderr.write(f"device {state.value}{': ' + reason if reason else ''}\n")

    def set_identity(self, identity: DeviceIdentity) -> None:
        """Ignore."""

    def set_battery(self, percent: int) -> None:
        """Ignore."""

    def set_signal(self, rssi_dbm: int) -> None:
        """Ignore."""

    def set_clock_offset(self, offset_s: float) -> None:
        """Ignore."""

    def count(self, counter: str, n: int = 1) -> None:
        """Ignore."""


def demo_settings(profile: str, address: str = DEMO_ADDRESS) -> BleSettings:
    """Settings binding the demo device, with short timings so a demo shows results fast."""
    common = {"id": f"demo-{profile}", "address": address}
    if profile == "heart-rate":
        return BleHeartRateSettings(**common, interval_s=5.0)
    if profile == "pulse-oximeter-continuous":
        return BlePulseOximeterSettings(**common, mode="continuous", interval_s=5.0)
    if profile == "pulse-oximeter":
        return BlePulseOximeterSettings(**common, idle_s=1.0, rest_s=30.0)
    model: type[EpisodicBleSettings] = {
        "blood-pressure": BleBloodPressureSettings,
        "thermometer": BleThermometerSettings,
        "weight-scale": BleWeightScaleSettings,
        "glucose": BleGlucoseSettings,
    }[profile]
    return model(**common, idle_s=1.0, rest_s=30.0)


async def _run_in_process(profile: str, duration_s: float | None) -> None:
    from drivers.ble.driver import build  # noqa: PLC0415 - only this mode runs a hub

    world = BleWorld()
    await world.start()
    device = demo_peripheral(profile)
    await device.attach(world)
    ctx = DriverContext(
        sink=PrintingSink(),
        clock=SystemClock(),
        reporter=QuietReporter(),
        patient=PatientBinding("demo-patient", 1),
        timezone_name="UTC",
    )
    settings = demo_settings(profile)
    state = tempfile.TemporaryDirectory(prefix="wardlink-simulate-")  # the glucose cursor
    driver = functools.partial(
        build,
        link_factory=world.link_factory,
        scanner_factory=world.scanner_factory,
        state_dir=Path(state.name),
    )(settings, ctx)
    try:
        async with asyncio.timeout(duration_s):
            await driver.run()
    except TimeoutError:
        pass  # the requested duration is over
    finally:
        await driver.close()
        await device.close()
        await world.close()
        state.cleanup()


async def _serve(profile: str, transport: str) -> None:
    from bumble.device import Device  # noqa: PLC0415
    from bumble.hci import Address  # noqa: PLC0415
    from bumble.transport import open_transport  # noqa: PLC0415

    async with await open_transport(transport) as (source, sink):
        device = demo_peripheral(profile)
        bumble_device = Device.with_hci(device.name, Address(device.address), source, sink)
        await device.attach_device(bumble_device)
        sys.stderr.write(f"serving {profile} as {device.address} on {transport}; Ctrl-C stops\n")
        await asyncio.Event().wait()


def simulate_ble_main(profile: str, transport: str | None, duration_s: float | None = None) -> int:
    """Run an emulated device; returns a process exit code."""
    if profile not in PROFILE_NAMES:
        sys.stderr.write(f"unknown profile {profile!r}; choose one of {', '.join(PROFILE_NAMES)}\n")
        return _EX_USAGE
    try:
        if transport is None:
            asyncio.run(_run_in_process(profile, duration_s))
        else:
            asyncio.run(_serve(profile, transport))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        sys.stderr.write(f"cannot open bumble transport {transport!r}: {exc}\n")
        return _EX_UNAVAILABLE
    return 0
