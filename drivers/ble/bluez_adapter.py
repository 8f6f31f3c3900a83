"""``AdapterControl`` over BlueZ's D-Bus API: probe and power-cycle ``org.bluez.Adapter1``.

dbus-fast is already installed as a bleak dependency. A fresh bus connection per call
keeps nothing to go stale when bluetoothd (or the bus) restarts. Setting ``Powered``
needs the D-Bus policy BlueZ ships for the ``bluetooth`` group (Debian/Raspberry Pi OS:
/usr/share/dbus-1/system.d/bluetooth.conf), which the agent's unit has as a supplementary
group; no capability is involved.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusFastError

from drivers._ble import DBUS_UNREACHABLE
from drivers.ble.adapter import AdapterError

BLUEZ: Final = "org.bluez"
ADAPTER_IFACE: Final = "org.bluez.Adapter1"
PROPERTIES_IFACE: Final = "org.freedesktop.DBus.Properties"
CALL_TIMEOUT_S: Final = 10.0
NO_REPLY: Final = "org.freedesktop.DBus.Error.NoReply"


class BluezAdapter:
    """One BlueZ adapter (``hci0``) on the system bus, or on ``bus_address`` (tests)."""

    def __init__(
        self, adapter: str = "hci0", *, bus_address: str | None = None, settle_s: float = 2.0
    ) -> None:
        """No I/O. ``settle_s``: time powered off, so the controller really resets."""
        self._path = f"/org/bluez/{adapter}"
        self._bus_address = bus_address
        self._settle_s = settle_s

    async def probe(self) -> None:
        """Return if the adapter exists and is powered; raise AdapterError otherwise."""
        bus = await self._connect()
        try:
            reply = await _call(
                bus, self._path, PROPERTIES_IFACE, "Get", "ss", [ADAPTER_IFACE, "Powered"]
            )
        finally:
            bus.disconnect()
        if not reply[0].value:
            raise AdapterError("org.bluez.Error.NotReady", "adapter is powered off")

    async def power_cycle(self) -> None:
        """``Powered`` false, a pause, then true."""
        bus = await self._connect()
        try:
            await self._set_powered(bus, on=False)
            await asyncio.sleep(self._settle_s)
            await self._set_powered(bus, on=True)
        finally:
            bus.disconnect()

    async def _set_powered(self, bus: MessageBus, *, on: bool) -> None:
        body = [ADAPTER_IFACE, "Powered", Variant("b", on)]
        await _call(bus, self._path, PROPERTIES_IFACE, "Set", "ssv", body)

    async def _connect(self) -> MessageBus:
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                bus = MessageBus(bus_address=self._bus_address, bus_type=BusType.SYSTEM)
                return await bus.connect()
        except (OSError, DBusFastError, TimeoutError) as exc:
            raise AdapterError(DBUS_UNREACHABLE, str(exc) or type(exc).__name__) from exc


async def _call(
    bus: MessageBus, path: str, interface: str, member: str, signature: str, body: list[Any]
) -> list[Any]:
    """One method call on org.bluez; its reply body, or AdapterError with BlueZ's error name."""
    message = Message(
        destination=BLUEZ,
        path=path,
        interface=interface,
        member=member,
        signature=signature,
        body=body,
    )
    try:
        async with asyncio.timeout(CALL_TIMEOUT_S):
            reply = await bus.call(message)
    except TimeoutError as exc:
        raise AdapterError(NO_REPLY, f"{member} not answered in {CALL_TIMEOUT_S:g} s") from exc
    except (OSError, DBusFastError) as exc:  # the bus itself went away mid-call
        raise AdapterError(DBUS_UNREACHABLE, str(exc) or type(exc).__name__) from exc
    if reply.message_type == MessageType.ERROR:
        text = str(reply.body[0]) if reply.body else ""
        raise AdapterError(reply.error_name or "unknown D-Bus error", text)
    return list(reply.body)
