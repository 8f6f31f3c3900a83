"""Bond removal by ``wardlink decommission`` against a fake BlueZ on a private D-Bus.

BlueZ cannot run here (no /dev/vhci), so python-dbusmock's ``bluez5`` template plays
``org.bluez`` on a private system bus (a real dbus-daemon, never the machine's own). The
code under test is the production ``BluezBonds`` (dbus-fast) and the command around it;
the mock records every method call, so the tests can say exactly which devices
``Adapter1.RemoveDevice`` was called for.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from dbusmock import MOCK_IFACE  # type: ignore[import-untyped]
from dbusmock.testcase import BusType, PrivateDBus, SpawnedMock  # type: ignore[import-untyped]

from agent.bluez_bonds import BluezBonds
from agent.decommission import decommission_main
from tests.ops.fill import fill_outbox, write_config

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

BLUEZ_MOCK = "org.bluez.Mock"
CUFF, GLUCO, MISSING, NEIGHBOUR = (
    "C0:FF:EE:00:00:01",
    "C0:FF:EE:00:00:04",
    "C0:FF:EE:00:00:05",
    "C0:FF:EE:00:00:09",
)
BLE_DEVICES = f"""\
devices:
  - {{id: bp-cuff, driver: ble-blood-pressure, address: "{CUFF.lower()}"}}
  - {{id: gluco, driver: ble-glucose, address: "{GLUCO}"}}
  - {{id: thermo, driver: ble-thermometer, address: "{MISSING}"}}
"""


@pytest.fixture
def system_bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private system bus; its address (also in DBUS_SYSTEM_BUS_ADDRESS, restored after)."""
    monkeypatch.delenv("DBUS_SYSTEM_BUS_ADDRESS", raising=False)  # undo restores it
    with PrivateDBus(BusType.SYSTEM) as bus:
        yield str(bus.address)


@pytest.fixture
def bluez(system_bus: str) -> Iterator[Any]:
    """Fake bluetoothd: two adapters; the cuff known to both, every device paired."""
    del system_bus  # the mock connects through DBUS_SYSTEM_BUS_ADDRESS
    with SpawnedMock.spawn_with_template("bluez5") as mock:
        for adapter in ("hci0", "hci1"):
            mock.obj.AddAdapter(adapter, f"hub-{adapter}", dbus_interface=BLUEZ_MOCK)
        for adapter, address in (
            ("hci0", CUFF),
            ("hci1", CUFF),
            ("hci0", GLUCO),
            ("hci0", NEIGHBOUR),
        ):
            mock.obj.AddDevice(adapter, address, "device", dbus_interface=BLUEZ_MOCK)
            mock.obj.PairDevice(adapter, address, dbus_interface=BLUEZ_MOCK)
        yield mock


def _adapter(name: str) -> Any:
    return BusType.SYSTEM.get_connection().get_object("org.bluez", f"/org/bluez/{name}")


def _removed(adapter: str) -> list[str]:
    """Object paths RemoveDevice was called with on ``adapter``, in call order."""
    calls = _adapter(adapter).GetMethodCalls("RemoveDevice", dbus_interface=MOCK_IFACE)
    return [str(args[0]) for _, args in calls]


def _path(adapter: str, address: str) -> str:
    return f"/org/bluez/{adapter}/dev_{address.replace(':', '_')}"


def _ble_config(tmp_path: Path) -> str:
    path = write_config(tmp_path)
    path.write_text(path.read_text() + BLE_DEVICES)
    asyncio.run(fill_outbox(tmp_path / "state" / "outbox.db", pending=0, sent=2))
    return str(path)


def test_remove_device_is_called_for_exactly_the_configured_devices(
    tmp_path: Path, system_bus: str, bluez: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    del bluez
    config = _ble_config(tmp_path)
    code = decommission_main(
        config, export=None, force=False, offline=True, bonds=BluezBonds(system_bus)
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert _removed("hci0") == [_path("hci0", CUFF), _path("hci0", GLUCO)]
    assert _removed("hci1") == [_path("hci1", CUFF)]
    # BlueZ itself no longer has them; the neighbour's device (not configured) is kept.
    manager = BusType.SYSTEM.get_connection().get_object("org.bluez", "/")
    left = manager.GetManagedObjects(dbus_interface="org.freedesktop.DBus.ObjectManager")
    assert sorted(p for p in map(str, left) if "/dev_" in p) == [_path("hci0", NEIGHBOUR)]
    assert f"removed Bluetooth bond {CUFF} ({_path('hci0', CUFF)}, {_path('hci1', CUFF)})" in out
    assert f"removed Bluetooth bond {GLUCO}" in out
    assert f"no Bluetooth record of {MISSING}: nothing to remove" in out
    assert f"also bonded, not in the config (left alone): {NEIGHBOUR}" in out
    assert " file(s) and 2 bond(s); sha256 " in out


def test_a_refused_removal_is_reported_and_the_command_is_not_complete(
    tmp_path: Path, system_bus: str, bluez: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    del bluez
    _adapter("hci0").AddMethod(
        "org.bluez.Adapter1",
        "RemoveDevice",
        "o",
        "",
        "raise dbus.exceptions.DBusException('Operation not permitted', "
        "name='org.bluez.Error.NotPermitted')",
        dbus_interface=MOCK_IFACE,
    )
    config = _ble_config(tmp_path)
    code = decommission_main(
        config, export=None, force=False, offline=True, bonds=BluezBonds(system_bus)
    )
    out = capsys.readouterr().out
    assert code == 1
    assert f"could NOT remove Bluetooth bond {GLUCO}: org.bluez.Error.NotPermitted" in out
    assert f"removed Bluetooth bond {CUFF} ({_path('hci1', CUFF)})" in out  # hci1 still works
    assert "NOT complete:" in out
    assert "Bluetooth bond(s) not removed" in out
    assert not (tmp_path / "state" / "outbox.db").exists()  # the files went regardless


@pytest.mark.parametrize("bus", ["no-bluez", "no-bus"])
def test_absent_bluez_is_reported_clearly_not_as_a_traceback(
    tmp_path: Path, system_bus: str, bus: str, capsys: pytest.CaptureFixture[str]
) -> None:
    address = system_bus if bus == "no-bluez" else f"unix:path={tmp_path}/no-such-socket"
    config = _ble_config(tmp_path)
    code = decommission_main(
        config, export=None, force=False, offline=True, bonds=BluezBonds(address)
    )
    captured = capsys.readouterr()
    assert code == 1
    expected = (
        "BlueZ (bluetoothd) is not running" if bus == "no-bluez" else "cannot connect to D-Bus"
    )
    assert f"could NOT remove Bluetooth bonds: {expected}" in captured.out
    for address in (CUFF, GLUCO, MISSING):  # what the technician can do by hand
        assert f"  bluetoothctl remove {address}\n" in captured.out
    assert "NOT complete: Bluetooth bonds not removed" in captured.out
    assert "Traceback" not in captured.out + captured.err
    assert not (tmp_path / "state" / "outbox.db").exists()
