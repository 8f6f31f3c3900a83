"""BleakLink against a fake at bleak's API (BlueZ cannot run here; see docs/ble.md).

What is tested for real: UUID spelling, byte conversion, notification delivery, the
disconnect callback, and the translation of bleak's exceptions into ours, with advice.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from bleak.exc import BleakCharacteristicNotFoundError, BleakDBusError, BleakError

from agent.errors import PermanentDeviceError, TransientDeviceError
from drivers._ble import BleakLink, uuid16, uuid128
from tests.drivers.bleak_fake import FakeBleakClient

if TYPE_CHECKING:
    from collections.abc import Callable

SERIAL = uuid128("2A25")
BP = uuid128("2A35")


class Connector:
    """A ``ClientConnector`` handing out one fake client and keeping bleak's callback."""

    def __init__(self, client: FakeBleakClient, fail_with: BaseException | None = None) -> None:
        self.client = client
        self.fail_with = fail_with
        self.on_disconnect: Callable[[Any], None] | None = None

    async def __call__(
        self, address: str, timeout_s: float, on_disconnect: Callable[[Any], None]
    ) -> Any:
        if self.fail_with is not None:
            raise self.fail_with
        self.on_disconnect = on_disconnect
        return self.client


async def connected(client: FakeBleakClient, op_timeout_s: float = 5.0) -> BleakLink:
    link = BleakLink(Connector(client), op_timeout_s=op_timeout_s)
    await link.connect("A4:C1:38:00:00:01", 5.0)
    return link


def test_uuid_spellings_normalise_to_bleaks_128_bit_form() -> None:
    assert uuid128("2A35") == "00002a35-0000-1000-8000-00805f9b34fb"
    assert uuid128("0x2a35") == uuid128(0x2A35) == uuid128("00002A35-0000-1000-8000-00805F9B34FB")
    assert uuid16(uuid128("2A35")) == 0x2A35
    assert uuid16("12345678-1234-5678-1234-567812345678") is None


async def test_reads_writes_and_notifications_pass_bytes_through() -> None:
    client = FakeBleakClient({SERIAL: b"SN0001", BP: b""})
    link = await connected(client)
    assert link.is_connected
    assert link.has_characteristic("2A25")
    assert not link.has_characteristic("2A1C")
    assert await link.read("2A25") == b"SN0001"
    await link.write("2A35", b"\x01\x01")
    assert client.writes == [(BP, b"\x01\x01", True)]
    got: list[bytes] = []
    await link.start_notify("2A35", got.append)
    client.callbacks[BP](object(), bytearray(b"\x00\x78"))
    assert got == [b"\x00\x78"]
    assert isinstance(got[0], bytes)
    await link.disconnect()
    await link.disconnect()  # twice is safe
    assert client.disconnects == 1
    assert not link.is_connected


async def test_can_write_follows_the_characteristics_properties() -> None:
    current_time = uuid128("2A2B")
    client = FakeBleakClient({SERIAL: b"SN0001", current_time: bytes(10)})
    link = await connected(client)
    assert not link.can_write("2A2B")  # Current Time is read/notify unless the device says so
    client.services.writable.add(current_time)
    assert link.can_write("2A2B")
    assert not link.can_write("2A1C")  # not served at all


async def test_bleak_errors_become_transient_with_advice() -> None:
    client = FakeBleakClient({SERIAL: b"SN0001"})
    link = await connected(client)
    client.fail_with = BleakDBusError("org.bluez.Error.Failed", ["Operation failed"])
    with pytest.raises(TransientDeviceError, match="move the device closer") as info:
        await link.read("2A25")
    assert isinstance(info.value.__cause__, BleakError)


async def test_a_missing_characteristic_is_permanent() -> None:
    client = FakeBleakClient({SERIAL: b"SN0001"})
    link = await connected(client)
    client.fail_with = BleakCharacteristicNotFoundError("2A35")
    with pytest.raises(PermanentDeviceError, match="driver"):
        await link.start_notify("2A35", lambda _data: None)


async def test_a_stalled_stack_times_out_as_transient() -> None:
    client = FakeBleakClient({SERIAL: b"SN0001"})
    link = await connected(client, op_timeout_s=0.05)
    client.stall = True
    with pytest.raises(TransientDeviceError, match="timed out"):
        await link.read("2A25")


async def test_a_bug_is_not_disguised_as_a_radio_error() -> None:
    client = FakeBleakClient({SERIAL: b"SN0001"})
    link = await connected(client)
    client.fail_with = ZeroDivisionError()
    with pytest.raises(ZeroDivisionError):
        await link.read("2A25")


async def test_failed_connect_and_pairing_are_translated() -> None:
    link = BleakLink(Connector(FakeBleakClient({}), fail_with=BleakError("le-connection-abort")))
    with pytest.raises(TransientDeviceError, match="connecting"):
        await link.connect("A4:C1:38:00:00:01", 1.0)
    client = FakeBleakClient({})
    link = await connected(client)
    client.fail_with = BleakDBusError("org.bluez.Error.AuthenticationFailed", [])
    with pytest.raises(PermanentDeviceError, match="re-pair"):
        await link.pair()


async def test_disconnect_callback_fires_when_bleak_reports_a_drop() -> None:
    client = FakeBleakClient({})
    connector = Connector(client)
    link = BleakLink(connector)
    dropped: list[bool] = []
    link.set_disconnect_callback(lambda: dropped.append(True))
    await link.connect("A4:C1:38:00:00:01", 1.0)
    assert connector.on_disconnect is not None
    client.connected = False
    connector.on_disconnect(client)
    assert dropped == [True]
    with pytest.raises(TransientDeviceError, match="not connected"):
        await link.read("2A25")


async def test_missing_bluez_is_reported_as_the_hubs_stack_not_the_device() -> None:
    link = BleakLink(Connector(FakeBleakClient({}), fail_with=FileNotFoundError(2, "No such file")))
    with pytest.raises(TransientDeviceError, match="bluetoothctl show"):
        await link.connect("A4:C1:38:00:00:01", 1.0)


@pytest.mark.skipif(
    Path("/run/dbus/system_bus_socket").exists(), reason="this machine has a system D-Bus"
)
async def test_production_connector_without_bluez_fails_with_advice() -> None:
    # The real connect_with_retry (BlueZ cache, scan, establish_connection) as far as it
    # gets here: no D-Bus. It must end in our error with advice, not a traceback.
    link = BleakLink()
    with pytest.raises(TransientDeviceError, match="bluetoothctl show"):
        await link.connect("A4:C1:38:00:00:01", 2.0)
    assert not link.is_connected
