"""bumble peripherals serving the real SIG GATT services, and the in-process central.

``BleWorld`` is one emulated radio: a bumble ``LocalLink`` with the hub's central (a
bumble Device that keeps scanning) and any number of peripherals. ``BumbleLink`` and
``BumbleScanner`` implement the ``GattLink``/``Scanner`` seams of drivers/_ble.py over
it, so the BLE session logic runs unchanged against real ATT traffic (STYLE.md §9 tier 2;
bumble ``tests/test_utils.py`` TwoDevices; a peripheral must ``start_advertising`` first).

Peripherals (drivers/emulators/ble_peripherals.py) hold measurement payloads as bytes
built by drivers/emulators/ble_payloads.py. This module knows GATT, not profiles.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Final

from bumble.controller import Controller
from bumble.core import AdvertisingData, BaseBumbleError
from bumble.device import Connection, Device, Peer
from bumble.gatt import Characteristic
from bumble.hci import Address
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink

from agent.errors import PermanentDeviceError, TransientDeviceError
from drivers._ble import (
    ADVICE_PAIR,
    ADVICE_PROFILE,
    ADVICE_RANGE,
    AdvertCallback,
    Advertisement,
    DisconnectCallback,
    NotifyCallback,
    uuid128,
)

if TYPE_CHECKING:
    from bumble.gatt_client import CharacteristicProxy

logger = logging.getLogger(__name__)

HUB_ADDRESS: Final = "F0:00:00:00:00:01"
_OP_TIMEOUT_S: Final = 10.0
_ADV_INTERVAL_MS: Final = 20.0  # fast adverts: tests wait for them
_RSSI_DBM: Final = -50  # bumble's LocalLink reports no real signal; this is its constant


def make_device(link: LocalLink, name: str, address: str) -> Device:
    """A powered-off bumble Device with its own controller on ``link``."""
    controller = Controller(name, link=link, public_address=address)
    return Device(
        name=name, address=Address(address), host=Host(controller, AsyncPipeSink(controller))
    )


class BleWorld:
    """An in-process radio: the hub's central plus the peripherals around it."""

    def __init__(self, hub_address: str = HUB_ADDRESS) -> None:
        """Store the hub address; no I/O until ``start``."""
        self._hub_address = hub_address
        self.link: LocalLink | None = None
        self.central: Device | None = None
        self._listeners: list[AdvertCallback] = []
        self.connect_lock = asyncio.Lock()  # bumble: one pending LE connection at a time

    async def start(self) -> None:
        """Power on the central and keep it scanning (adverts fan out to scanners)."""
        self.link = LocalLink()  # type: ignore[no-untyped-call]
        self.central = make_device(self.link, "hub", self._hub_address)
        self.central.on("advertisement", self._on_advertisement)
        await self.central.power_on()
        await self.central.start_scanning(filter_duplicates=False)

    def require_central(self) -> Device:
        """The central; raises if ``start`` was not awaited (a programming error)."""
        if self.central is None:
            raise RuntimeError("BleWorld.start() was not awaited")
        return self.central

    def require_link(self) -> LocalLink:
        """The LocalLink peripherals join."""
        if self.link is None:
            raise RuntimeError("BleWorld.start() was not awaited")
        return self.link

    def _on_advertisement(self, adv: Any) -> None:  # noqa: ANN401 - bumble's Advertisement
        data = adv.data
        name = data.get(AdvertisingData.COMPLETE_LOCAL_NAME) or data.get(
            AdvertisingData.SHORTENED_LOCAL_NAME
        )
        uuids: list[Any] = []
        for kind in (
            AdvertisingData.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
            AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
        ):
            uuids.extend(data.get(kind) or [])
        advert = Advertisement(
            address=str(adv.address).split("/")[0].upper(),
            name=name if isinstance(name, str) else None,
            rssi_dbm=_RSSI_DBM if adv.rssi is None else int(adv.rssi),
            service_uuids=tuple(uuid128(u.to_hex_str("-")) for u in uuids),
        )
        for listener in list(self._listeners):
            listener(advert)

    def add_listener(self, callback: AdvertCallback) -> None:
        """Deliver every advertisement to ``callback``."""
        self._listeners.append(callback)

    def remove_listener(self, callback: AdvertCallback) -> None:
        """Stop delivering to ``callback``; safe if absent."""
        if callback in self._listeners:
            self._listeners.remove(callback)

    def link_factory(self) -> BumbleLink:
        """A fresh link (``LinkFactory`` for drivers' ``build``)."""
        return BumbleLink(self)

    def scanner_factory(self) -> BumbleScanner:
        """A fresh scanner (``ScannerFactory`` for drivers' ``build`` and ``scan``)."""
        return BumbleScanner(self)

    async def close(self) -> None:
        """Stop scanning and drop every connection of the central."""
        central = self.central
        if central is None:
            return
        self._listeners.clear()
        for connection in list(central.connections.values()):
            await _quiet_disconnect(connection)
        if central.scanning:
            await central.stop_scanning()
        self.central = None


async def _quiet_disconnect(connection: Connection) -> None:
    try:
        async with asyncio.timeout(_OP_TIMEOUT_S):
            await connection.disconnect()
    except (BaseBumbleError, TimeoutError) as exc:
        # Already gone: the peer dropped it first. Nothing else to release.
        logger.debug("disconnect of an already closed link: %s", exc)


class BumbleScanner:
    """``Scanner`` over the world's always-scanning central."""

    def __init__(self, world: BleWorld) -> None:
        """Store the world; no I/O."""
        self._world = world
        self._callback: AdvertCallback | None = None

    async def start(self, callback: AdvertCallback) -> None:
        """Deliver advertisements to ``callback``."""
        self._callback = callback
        self._world.add_listener(callback)

    async def stop(self) -> None:
        """Stop delivering; safe twice."""
        if self._callback is not None:
            self._world.remove_listener(self._callback)
            self._callback = None


class BumbleLink:
    """``GattLink`` as a bumble central: real ATT over the in-process LocalLink."""

    def __init__(self, world: BleWorld) -> None:
        """Store the world; no I/O."""
        self._world = world
        self._connection: Connection | None = None
        self._chars: dict[str, CharacteristicProxy[bytes]] = {}
        self._on_disconnect: DisconnectCallback | None = None

    @property
    def is_connected(self) -> bool:
        """Whether the link is up now."""
        return self._connection is not None

    def set_disconnect_callback(self, callback: DisconnectCallback | None) -> None:
        """Call ``callback`` when the link drops."""
        self._on_disconnect = callback

    def _dropped(self, _reason: int) -> None:
        self._connection = None
        self._chars = {}
        if self._on_disconnect is not None:
            self._on_disconnect()

    async def connect(self, address: str, timeout_s: float) -> None:
        """Connect and discover every service and characteristic."""
        central = self._world.require_central()
        try:
            async with asyncio.timeout(timeout_s):
                async with self._world.connect_lock:
                    connection = await central.connect(address, timeout=timeout_s)
                connection.on(connection.EVENT_DISCONNECTION, self._dropped)
                self._connection = connection
                peer = Peer(connection)
                await peer.discover_services()
                for service in peer.services:
                    await service.discover_characteristics()
                    for char in service.characteristics:
                        self._chars[uuid128(char.uuid.to_hex_str("-"))] = char
        except (BaseBumbleError, TimeoutError) as exc:
            await self.disconnect()
            raise TransientDeviceError(f"connecting failed; {ADVICE_RANGE}") from exc

    async def disconnect(self) -> None:
        """Release the connection; safe twice."""
        connection, self._connection = self._connection, None
        self._chars = {}
        if connection is not None:
            connection.remove_listener(connection.EVENT_DISCONNECTION, self._dropped)
            await _quiet_disconnect(connection)

    def has_characteristic(self, uuid: str) -> bool:
        """Whether the connected device serves this characteristic."""
        return uuid128(uuid) in self._chars

    def can_write(self, uuid: str) -> bool:
        """Whether the characteristic's properties include a write with response."""
        char = self._chars.get(uuid128(uuid))
        return char is not None and bool(char.properties & Characteristic.Properties.WRITE)

    def _char(self, uuid: str) -> CharacteristicProxy[bytes]:
        if self._connection is None:
            raise TransientDeviceError(f"not connected; {ADVICE_RANGE}")
        char = self._chars.get(uuid128(uuid))
        if char is None:
            raise PermanentDeviceError(f"characteristic {uuid} missing; {ADVICE_PROFILE}")
        return char

    async def read(self, uuid: str) -> bytes:
        """Read a characteristic value."""
        char = self._char(uuid)
        try:
            async with asyncio.timeout(_OP_TIMEOUT_S):
                return bytes(await char.read_value())
        except (BaseBumbleError, TimeoutError) as exc:
            raise TransientDeviceError(f"reading {uuid} failed; {ADVICE_RANGE}") from exc

    async def write(self, uuid: str, data: bytes, response: bool = True) -> None:
        """Write a characteristic value."""
        char = self._char(uuid)
        try:
            async with asyncio.timeout(_OP_TIMEOUT_S):
                await char.write_value(data, with_response=response)
        except (BaseBumbleError, TimeoutError) as exc:
            raise TransientDeviceError(f"writing {uuid} failed; {ADVICE_RANGE}") from exc

    async def start_notify(self, uuid: str, callback: NotifyCallback) -> None:
        """Enable notifications (or indications, when that is all the char offers)."""
        char = self._char(uuid)

        def deliver(value: bytes) -> None:
            callback(bytes(value))

        try:
            async with asyncio.timeout(_OP_TIMEOUT_S):
                await char.subscribe(deliver, prefer_notify=True)
        except (BaseBumbleError, TimeoutError) as exc:
            raise TransientDeviceError(f"subscribing to {uuid} failed; {ADVICE_RANGE}") from exc

    async def stop_notify(self, uuid: str) -> None:
        """Disable notifications/indications."""
        char = self._char(uuid)
        try:
            async with asyncio.timeout(_OP_TIMEOUT_S):
                await char.unsubscribe(force=True)
        except (BaseBumbleError, TimeoutError) as exc:
            raise TransientDeviceError(f"unsubscribing {uuid} failed; {ADVICE_RANGE}") from exc

    async def pair(self) -> None:
        """Pair (Just Works with bumble's default delegate) and encrypt the link."""
        if self._connection is None:
            raise TransientDeviceError(f"not connected; {ADVICE_RANGE}")
        try:
            async with asyncio.timeout(_OP_TIMEOUT_S):
                await self._connection.pair()
        except (BaseBumbleError, TimeoutError) as exc:
            raise PermanentDeviceError(f"pairing failed; {ADVICE_PAIR}") from exc
