"""One method call on BlueZ (``org.bluez``) over D-Bus, bounded in time, for every caller.

Used by the adapter recovery ladder (``drivers/ble/bluez_adapter.py``) and by bond removal
at decommission (``agent/bluez_bonds.py``). dbus-fast is already installed as a bleak
dependency. Every failure becomes ``BluezCallError`` carrying a D-Bus error name: BlueZ's
own, ``NO_REPLY`` when it did not answer in time, or ``DBUS_UNREACHABLE`` when there is no
bus (or it went away mid-call). Callers map the names to what they report.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusFastError

from drivers._ble import DBUS_UNREACHABLE

BLUEZ: Final = "org.bluez"
ADAPTER_IFACE: Final = "org.bluez.Adapter1"
CALL_TIMEOUT_S: Final = 10.0  # a wedged bluetoothd must hang neither the agent nor a tool
NO_REPLY: Final = "org.freedesktop.DBus.Error.NoReply"


class BluezCallError(Exception):
    """A D-Bus call to BlueZ failed; ``name`` is the D-Bus error name, ``text`` its message."""

    def __init__(self, name: str, text: str) -> None:
        """``str()`` is "name: text" (or the name alone)."""
        super().__init__(f"{name}: {text}" if text else name)
        self.name = name
        self.text = text


async def connect_bus(bus_address: str | None) -> MessageBus:
    """The system bus (or ``bus_address``, for tests), connected within the time bound.

    Raises:
        BluezCallError: ``DBUS_UNREACHABLE``, with why.
    """
    try:
        async with asyncio.timeout(CALL_TIMEOUT_S):
            bus = MessageBus(bus_address=bus_address, bus_type=BusType.SYSTEM)
            return await bus.connect()
    except (OSError, DBusFastError, TimeoutError) as exc:
        raise BluezCallError(DBUS_UNREACHABLE, str(exc) or type(exc).__name__) from exc


async def call_bluez(
    bus: MessageBus,
    path: str,
    interface: str,
    member: str,
    signature: str = "",
    body: list[Any] | None = None,
) -> list[Any]:
    """One method call on org.bluez; its reply body.

    Raises:
        BluezCallError: BlueZ's error, ``NO_REPLY`` (no answer in time) or
            ``DBUS_UNREACHABLE`` (the bus went away mid-call).
    """
    message = Message(
        destination=BLUEZ,
        path=path,
        interface=interface,
        member=member,
        signature=signature,
        body=body or [],
    )
    try:
        async with asyncio.timeout(CALL_TIMEOUT_S):
            reply = await bus.call(message)
    except TimeoutError as exc:
        raise BluezCallError(NO_REPLY, f"{member} not answered in {CALL_TIMEOUT_S:g} s") from exc
    except (OSError, DBusFastError) as exc:
        raise BluezCallError(DBUS_UNREACHABLE, str(exc) or type(exc).__name__) from exc
    if reply.message_type == MessageType.ERROR:
        text = str(reply.body[0]) if reply.body else ""
        raise BluezCallError(reply.error_name or "unknown D-Bus error", text)
    return list(reply.body)
