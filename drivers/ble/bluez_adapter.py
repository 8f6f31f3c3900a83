"""``AdapterControl`` over BlueZ's D-Bus API: probe and power-cycle ``org.bluez.Adapter1``.

dbus-fast is already installed as a bleak dependency. A fresh bus connection per call
keeps nothing to go stale when bluetoothd (or the bus) restarts. Setting ``Powered``
needs the D-Bus policy BlueZ ships for the ``bluetooth`` group (Debian/Raspberry Pi OS:
/usr/share/dbus-1/system.d/bluetooth.conf), which the agent's unit has as a supplementary
group; no capability is involved.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

from dbus_fast import Variant

from drivers._bluez import ADAPTER_IFACE, BluezCallError, call_bluez, connect_bus
from drivers.ble.adapter import AdapterError

if TYPE_CHECKING:
    from dbus_fast.aio import MessageBus

PROPERTIES_IFACE: Final = "org.freedesktop.DBus.Properties"


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
            reply = await self._call(bus, "Get", "ss", [ADAPTER_IFACE, "Powered"])
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
        await self._call(bus, "Set", "ssv", [ADAPTER_IFACE, "Powered", Variant("b", on)])

    async def _connect(self) -> MessageBus:
        try:
            return await connect_bus(self._bus_address)
        except BluezCallError as exc:
            raise AdapterError(exc.name, exc.text) from exc

    async def _call(
        self, bus: MessageBus, member: str, signature: str, body: list[Any]
    ) -> list[Any]:
        """A Properties call on the adapter; AdapterError with the D-Bus error name."""
        try:
            return await call_bluez(bus, self._path, PROPERTIES_IFACE, member, signature, body)
        except BluezCallError as exc:
            raise AdapterError(exc.name, exc.text) from exc
