"""`wardlink scan`: list nearby BLE health devices and print a config snippet to bind one.

For the technician at install: which devices are advertising a SIG health service, how
strong their signal is (the patient's device should be the strongest, next to the hub),
and the exact YAML to paste under ``devices:``. Devices advertising no health service
are not listed (phones, headphones).
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from agent.errors import DeviceError
from drivers._ble import uuid128

if TYPE_CHECKING:
    from drivers._ble import Advertisement, Scanner

# Service UUID -> the `driver:` that binds it (pulse oximeters: the spot mode by default).
DRIVER_FOR_SERVICE: Final[dict[str, str]] = {
    uuid128(0x1810): "ble-blood-pressure",
    uuid128(0x1809): "ble-thermometer",
    uuid128(0x181D): "ble-weight-scale",
    uuid128(0x1808): "ble-glucose",
    uuid128(0x1822): "ble-pulse-oximeter",
    uuid128(0x180D): "ble-heart-rate",
}
_EX_UNAVAILABLE: Final = 69
_EX_USAGE: Final = 64


@dataclass(frozen=True, slots=True)
class Found:
    """One advertising health device, as last heard during the scan."""

    address: str
    name: str | None
    rssi_dbm: int | None
    driver: str


def _driver_of(advert: Advertisement) -> str | None:
    return next(
        (DRIVER_FOR_SERVICE[u] for u in advert.service_uuids if u in DRIVER_FOR_SERVICE), None
    )


async def scan(duration_s: float, scanner: Scanner) -> list[Found]:
    """Listen for ``duration_s`` and return health devices, strongest signal first."""
    found: dict[str, Found] = {}

    def on_advert(advert: Advertisement) -> None:
        driver = _driver_of(advert)
        if driver is None:
            return
        previous = found.get(advert.address)
        found[advert.address] = Found(
            address=advert.address,
            name=advert.name or (previous.name if previous else None),
            rssi_dbm=advert.rssi_dbm,
            driver=driver,
        )

    await scanner.start(on_advert)
    try:
        await asyncio.sleep(duration_s)
    finally:
        await scanner.stop()
    return sorted(found.values(), key=lambda f: -(f.rssi_dbm if f.rssi_dbm is not None else -999))


def format_found(found: list[Found]) -> str:
    """A table of devices and, for each, the YAML that binds it."""
    if not found:
        return (
            "No BLE health devices heard. Wake the device (take a measurement or press its "
            "button), hold it next to the hub and scan again.\n"
        )
    lines = [f"{'DRIVER':<20} {'ADDRESS':<17} {'RSSI':>5}  NAME"]
    for item in found:
        rssi = "?" if item.rssi_dbm is None else str(item.rssi_dbm)
        lines.append(f"{item.driver:<20} {item.address:<17} {rssi:>5}  {item.name or '-'}")
    lines.append("")
    lines.append("To bind one, add it under `devices:` in the config (strongest signal first):")
    for item in found:
        device_id = (
            f"{item.driver.removeprefix('ble-')}-{item.address[-5:].replace(':', '').lower()}"
        )
        lines += [
            "",
            f"  - id: {device_id}",
            f"    driver: {item.driver}",
            f'    address: "{item.address}"',
            '    # serial_number: "..."  # from the device label; checked on every connection',
            "    # pair: true             # if the device asks for pairing",
        ]
    return "\n".join(lines) + "\n"


async def _scan_bumble_demo(duration_s: float) -> list[Found]:
    from drivers.emulators.ble import BleWorld  # noqa: PLC0415 - demo only
    from drivers.emulators.ble_cli import PROFILE_NAMES, demo_peripheral  # noqa: PLC0415

    world = BleWorld()
    await world.start()
    devices = [
        demo_peripheral(profile, f"C0:FF:EE:00:00:{index:02X}")
        for index, profile in enumerate(PROFILE_NAMES, start=1)
    ]
    try:
        for device in devices:
            await device.attach(world)
        return await scan(duration_s, world.scanner_factory())
    finally:
        for device in devices:
            await device.close()
        await world.close()


async def _scan_bluez(duration_s: float) -> list[Found]:
    from drivers._ble import BleakAdvertScanner  # noqa: PLC0415

    return await scan(duration_s, BleakAdvertScanner())


def scan_main(duration_s: float, transport: str) -> int:
    """Run a scan and print the result; returns a process exit code.

    Args:
        duration_s: how long to listen.
        transport: "bluez" (the hub's adapter) or "bumble-local" (emulated demo devices).
    """
    if duration_s <= 0:
        sys.stderr.write("scan duration must be positive\n")
        return _EX_USAGE
    runners = {"bluez": _scan_bluez, "bumble-local": _scan_bumble_demo}
    runner = runners.get(transport)
    if runner is None:
        sys.stderr.write(f"unknown transport {transport!r}; use one of {', '.join(runners)}\n")
        return _EX_USAGE
    try:
        found = asyncio.run(runner(duration_s))
    except DeviceError as exc:
        sys.stderr.write(f"scan failed: {exc}\n")
        return _EX_UNAVAILABLE
    sys.stdout.write(format_found(found))
    return 0
