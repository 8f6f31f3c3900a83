"""`wardlink scan` over the bumble radio: real advertisements, real AD structures."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from drivers.ble.scan import Found, format_found, scan, scan_main
from drivers.emulators.ble import BleWorld
from drivers.emulators.ble_cli import demo_peripheral
from tests.drivers.ble_support import world_fixture  # noqa: F401 - provides `world`

if TYPE_CHECKING:
    pass

pytestmark = pytest.mark.bumble


async def test_scan_lists_health_devices_with_their_driver(world: BleWorld) -> None:
    cuff = demo_peripheral("blood-pressure", "A4:C1:38:00:00:01")
    meter = demo_peripheral("glucose", "A4:C1:38:00:00:02")
    for device in (cuff, meter):
        await device.attach(world)
    await meter.stop_advertising()  # switched off: must not be listed
    found = await scan(0.5, world.scanner_factory())
    assert found == [Found("A4:C1:38:00:00:01", "Demo blood-pressure", -50, "ble-blood-pressure")]


def test_snippet_binds_the_device_by_address_and_driver() -> None:
    text = format_found([Found("A4:C1:38:00:00:01", "Cuff", -48, "ble-blood-pressure")])
    assert "  - id: blood-pressure-0001\n    driver: ble-blood-pressure\n" in text
    assert '    address: "A4:C1:38:00:00:01"\n' in text


def test_nothing_heard_says_what_to_do() -> None:
    assert "take a measurement" in format_found([])


def test_scan_main_rejects_bad_arguments_without_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert scan_main(1.0, "usb") == 64
    assert scan_main(0, "bluez") == 64
    assert "unknown transport" in capsys.readouterr().err


@pytest.mark.skipif(
    Path("/run/dbus/system_bus_socket").exists(), reason="this machine has a system D-Bus"
)
def test_scan_main_without_bluez_fails_with_advice(capsys: pytest.CaptureFixture[str]) -> None:
    # No D-Bus/BlueZ here: the foreseeable mistake on a hub whose bluetoothd is down.
    assert scan_main(0.2, "bluez") == 69
    assert "bluetoothctl show" in capsys.readouterr().err
