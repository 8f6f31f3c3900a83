"""Rung 2 for real: ``BluezAdapter`` (dbus-fast) against a fake BlueZ on a private D-Bus.

BlueZ cannot run here (no /dev/vhci), so python-dbusmock's ``bluez5`` template serves
``org.bluez`` with an ``Adapter1`` on a private system bus (a real dbus-daemon, never the
machine's own). The code under test is the production adapter control: the probe reads
``Powered`` over the bus, the power cycle writes it, and errors arrive with BlueZ's and
the bus's own names.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from dbusmock.testcase import BusType, SpawnedMock  # type: ignore[import-untyped]

from agent.config import BluetoothConfig
from agent.health import Health
from drivers.ble.adapter import AdapterError, AdapterLadder, RequestFiles, Rung
from drivers.ble.bluez_adapter import BluezAdapter
from tests.drivers.test_ble_adapter_ladder import ManualClock
from tests.ops.test_decommission_bonds import system_bus

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

__all__ = ["system_bus"]  # a fixture, used by name

BLUEZ_MOCK = "org.bluez.Mock"
ADAPTER = "org.bluez.Adapter1"
PROPS = "org.freedesktop.DBus.Properties"


@pytest.fixture
def bluez(system_bus: str) -> Iterator[Any]:
    """Fake bluetoothd with one powered adapter, hci0."""
    del system_bus  # the mock connects through DBUS_SYSTEM_BUS_ADDRESS
    with SpawnedMock.spawn_with_template("bluez5") as mock:
        mock.obj.AddAdapter("hci0", "hub", dbus_interface=BLUEZ_MOCK)
        yield mock


def _hci0() -> Any:
    return BusType.SYSTEM.get_connection().get_object("org.bluez", "/org/bluez/hci0")


def _powered() -> bool:
    return bool(_hci0().Get(ADAPTER, "Powered", dbus_interface=PROPS))


def _power_off() -> None:
    _hci0().Set(ADAPTER, "Powered", False, dbus_interface=PROPS)  # noqa: FBT003 - D-Bus args


async def test_probe_passes_for_a_powered_adapter(system_bus: str, bluez: Any) -> None:
    await BluezAdapter("hci0", bus_address=system_bus).probe()


async def test_powered_off_adapter_is_not_ready_and_the_power_cycle_turns_it_on(
    system_bus: str, bluez: Any
) -> None:
    del bluez
    _power_off()
    control = BluezAdapter("hci0", bus_address=system_bus, settle_s=0.0)
    with pytest.raises(AdapterError) as caught:
        await control.probe()
    assert caught.value.name == "org.bluez.Error.NotReady"
    await control.power_cycle()
    assert _powered()
    await control.probe()


async def test_power_cycle_really_goes_through_off(system_bus: str, bluez: Any) -> None:
    # Watch the property from a second connection while the cycle pauses powered off.
    control = BluezAdapter("hci0", bus_address=system_bus, settle_s=0.5)
    cycle = asyncio.create_task(control.power_cycle())
    seen_off = False
    while not cycle.done():
        seen_off = seen_off or not await asyncio.to_thread(_powered)
        await asyncio.sleep(0.05)
    await cycle
    assert seen_off
    assert _powered()
    del bluez


async def test_a_vanished_hci0_and_a_dead_bluetoothd_have_their_dbus_names(
    system_bus: str, bluez: Any
) -> None:
    control = BluezAdapter("hci0", bus_address=system_bus)
    bluez.obj.RemoveAdapter("hci0", dbus_interface=BLUEZ_MOCK)
    with pytest.raises(AdapterError) as gone:
        await control.probe()
    assert gone.value.name == "org.freedesktop.DBus.Error.UnknownObject"
    bluez.terminate()  # bluetoothd stops: nobody owns org.bluez (terminate waits)
    with pytest.raises(AdapterError) as dead:
        await control.probe()
    assert dead.value.name == "org.freedesktop.DBus.Error.ServiceUnknown"
    with pytest.raises(AdapterError) as no_bus:
        await BluezAdapter("hci0", bus_address="unix:path=/nonexistent/bus").probe()
    assert no_bus.value.name == "wardlink.DBusUnreachable"


async def test_the_ladder_power_cycles_a_real_dbus_adapter_and_recovers(
    tmp_path: Path, system_bus: str, bluez: Any
) -> None:
    del bluez
    _power_off()  # a controller that came up unpowered (a Pi after a brown-out)
    clock = ManualClock()
    config = BluetoothConfig()
    health = Health(hub_id="hub", clock=clock)
    ladder = AdapterLadder(
        config,
        control=BluezAdapter("hci0", bus_address=system_bus, settle_s=0.0),
        requests=RequestFiles(tmp_path),
        clock=clock,
        alarms=health,
    )
    rungs = []
    while clock.elapsed_s <= config.power_cycle_after_s + config.recovered_after_s + 60:
        await ladder.tick()
        rungs.append(ladder.rung)
        clock.elapsed_s += config.probe_interval_s
    assert _powered()
    assert Rung.POWER_CYCLED in rungs
    assert Rung.BLUETOOTH_RESTART_REQUESTED not in rungs
    assert rungs[-1] is Rung.OK
    assert ladder.counters["power_cycles"] == 1
    assert "ble_adapter" not in health.alarms
