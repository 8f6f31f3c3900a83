"""Removing BlueZ bonds for ``wardlink decommission`` (reliability.md T22, ETSI 5.11).

The seam is ``BondRemover``; the production one, ``BluezBonds``, talks to ``org.bluez``
on the system D-Bus with dbus-fast (already installed as a bleak dependency): it lists
BlueZ's objects once (ObjectManager.GetManagedObjects), finds every ``org.bluez.Device1``
whose address is configured, and calls ``Adapter1.RemoveDevice`` on the adapter it
belongs to. RemoveDevice deletes the device's keys (the bond) and BlueZ's cached record of
it. A device on two adapters is removed from both. Devices that are bonded but not in the
config are reported, never removed: the technician decides.

Failures are reported as text, never as a traceback: no system bus, BlueZ not running,
access denied (RemoveDevice needs root or the ``bluetooth`` group's D-Bus policy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from drivers._ble import DBUS_UNREACHABLE
from drivers._bluez import (
    ADAPTER_IFACE,
    CALL_TIMEOUT_S,
    NO_REPLY,
    BluezCallError,
    call_bluez,
    connect_bus,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from dbus_fast.aio import MessageBus

OBJECT_MANAGER: Final = "org.freedesktop.DBus.ObjectManager"
DEVICE_IFACE: Final = "org.bluez.Device1"
# BlueZ says DoesNotExist when the device went away between listing and removing it:
# the bond is gone either way.
GONE_ERRORS: Final = frozenset({"org.bluez.Error.DoesNotExist"})
ABSENT_ERRORS: Final = frozenset(
    {"org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner"}
)


class BluezUnavailableError(Exception):
    """BlueZ could not be asked at all; the message says why and what to check."""


@dataclass(slots=True)
class BondReport:
    """What happened to each configured address (upper case) and what was left alone."""

    removed: dict[str, list[str]] = field(default_factory=dict)  # address -> object paths
    not_known: list[str] = field(default_factory=list)  # BlueZ has no record: no bond
    failed: dict[str, str] = field(default_factory=dict)  # address -> BlueZ's reason
    other_bonded: list[str] = field(default_factory=list)  # bonded, not configured, kept


class BondRemover(Protocol):
    """Removes the bonds of the given Bluetooth addresses."""

    async def remove(self, addresses: Sequence[str]) -> BondReport:
        """Remove every bond (and cached record) of ``addresses``.

        Raises:
            BluezUnavailableError: the Bluetooth stack cannot be reached.
        """
        ...


class BluezBonds:
    """``BondRemover`` over BlueZ's D-Bus API (the system bus, or ``bus_address``)."""

    def __init__(self, bus_address: str | None = None) -> None:
        """``bus_address`` None: the system bus (``DBUS_SYSTEM_BUS_ADDRESS`` or the default)."""
        self._bus_address = bus_address

    async def remove(self, addresses: Sequence[str]) -> BondReport:
        """See ``BondRemover.remove``."""
        bus = await self._connect()
        try:
            objects = await _call(bus, "/", OBJECT_MANAGER, "GetManagedObjects")
            wanted = {a.upper() for a in addresses}
            report = BondReport()
            found = _devices(objects[0])
            for path, (address, adapter, bonded) in sorted(found.items()):
                if address in wanted:
                    await _remove_one(bus, report, address, adapter, path)
                elif bonded:
                    report.other_bonded.append(address)
            known = {address for address, _, _ in found.values()}
            report.not_known = sorted(wanted - known)
            return report
        finally:
            bus.disconnect()

    async def _connect(self) -> MessageBus:
        where = self._bus_address or "the system bus"
        try:
            return await connect_bus(self._bus_address)
        except BluezCallError as exc:
            msg = f"cannot connect to D-Bus ({where}): {exc.text}"
            raise BluezUnavailableError(msg) from exc


def _devices(objects: dict[str, dict[str, dict[str, Any]]]) -> dict[str, tuple[str, str, bool]]:
    """Device object path -> (address, adapter path, bonded) for every BlueZ device."""
    found: dict[str, tuple[str, str, bool]] = {}
    for path, interfaces in objects.items():
        device = interfaces.get(DEVICE_IFACE)
        if device is None or "Address" not in device:
            continue
        address = str(device["Address"].value).upper()
        # Adapter is the owning adapter's path; older BlueZ nests the device under it.
        adapter = device["Adapter"].value if "Adapter" in device else path.rsplit("/", 1)[0]
        # Bonded appeared in BlueZ 5.66; Paired is the older (and still present) flag.
        bonded = any(device[k].value for k in ("Bonded", "Paired") if k in device)
        found[path] = (address, str(adapter), bool(bonded))
    return found


async def _remove_one(
    bus: MessageBus, report: BondReport, address: str, adapter: str, path: str
) -> None:
    try:
        await _call(bus, adapter, ADAPTER_IFACE, "RemoveDevice", "o", [path])
    except BluezCallError as exc:
        if exc.name not in GONE_ERRORS:
            report.failed[address] = str(exc)
            return
    report.removed.setdefault(address, []).append(path)


async def _call(
    bus: MessageBus,
    path: str,
    interface: str,
    member: str,
    signature: str = "",
    body: list[Any] | None = None,
) -> list[Any]:
    """One method call on org.bluez; its reply body.

    Raises:
        BluezUnavailableError: BlueZ is not on the bus, did not answer in time, or the
            command may not manage Bluetooth devices.
        BluezCallError: BlueZ answered with another error.
    """
    try:
        return await call_bluez(bus, path, interface, member, signature, body)
    except BluezCallError as exc:
        if exc.name == NO_REPLY:
            msg = f"BlueZ did not answer {member} within {CALL_TIMEOUT_S:.0f} s"
        elif exc.name == DBUS_UNREACHABLE:
            msg = f"lost the D-Bus connection during {member}: {exc.text}"
        elif exc.name in ABSENT_ERRORS:
            msg = f"BlueZ (bluetoothd) is not running on the bus: {exc.name}"
        elif exc.name == "org.freedesktop.DBus.Error.AccessDenied":
            msg = f"not permitted to manage Bluetooth devices (run as root): {exc.text or exc.name}"
        else:
            raise
        raise BluezUnavailableError(msg) from exc
