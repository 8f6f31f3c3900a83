"""The BLE seam: ``GattLink`` and ``Scanner``, and their production bleak implementation.

Session logic (drivers/ble/driver.py) talks only to these two small protocols. Two
implementations exist:

- ``BleakLink`` / ``BleakAdvertScanner`` here: bleak on BlueZ, connections made with
  bleak-retry-connector's ``establish_connection`` (it knows BlueZ's out-of-slot,
  InProgress and abort-by-local errors). It cannot run in CI (no BlueZ, no /dev/vhci); it
  is tested against a fake at bleak's API plus a signature conformance test.
- ``BumbleLink`` / ``BumbleScanner`` in drivers/emulators/ble.py: a bumble central on an
  in-process LocalLink to bumble peripherals serving the real GATT services.

Every await on the radio runs under ``asyncio.timeout``: BlueZ can stall
(bleak-retry-connector's ``BLEAK_SAFETY_TIMEOUT`` note). Third-party exceptions are
translated here, once, into TransientDeviceError / PermanentDeviceError with advice.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from agent.errors import PermanentDeviceError, TransientDeviceError

if TYPE_CHECKING:
    from bleak import BleakClient
    from bleak.backends.characteristic import BleakGATTCharacteristic
    from bleak.backends.device import BLEDevice
    from bleak.backends.scanner import AdvertisementData

NotifyCallback = Callable[[bytes], None]
DisconnectCallback = Callable[[], None]
AdvertCallback = Callable[["Advertisement"], None]

_BASE_UUID_TAIL: Final = "-0000-1000-8000-00805f9b34fb"
_SHORT_UUID: Final = re.compile(r"^(0x)?([0-9a-fA-F]{4}|[0-9a-fA-F]{8})$")
_OP_TIMEOUT_S: Final = 10.0  # one GATT read/write/subscribe; ATT's own timeout is 30 s
_PAIR_TIMEOUT_S: Final = 30.0  # a passkey entry can take a person this long

ADVICE_RANGE: Final = (
    "move the device closer to the hub, check it is switched on and not connected to a phone"
)
ADVICE_ADAPTER: Final = (
    "check the hub's Bluetooth adapter: `bluetoothctl show` must list it powered"
)
ADVICE_PAIR: Final = "re-pair the device on site (pairing window open, device next to the hub)"
ADVICE_PROFILE: Final = (
    "the device does not serve the expected GATT service; check the `driver:` of this device"
)


def uuid128(uuid: str | int) -> str:
    """A characteristic/service UUID as bleak spells it: 128-bit, lower case.

    Args:
        uuid: a 16-bit int (0x2A35), a short string ("2A35", "0x2A35") or a full UUID.

    Returns:
        e.g. "00002a35-0000-1000-8000-00805f9b34fb".
    """
    if isinstance(uuid, int):
        return f"{uuid:08x}{_BASE_UUID_TAIL}"
    text = uuid.strip()
    match = _SHORT_UUID.fullmatch(text)
    if match:
        return f"{int(match.group(2), 16):08x}{_BASE_UUID_TAIL}"
    return text.lower()


def uuid16(uuid: str) -> int | None:
    """The 16-bit form of a SIG base UUID, or None for a vendor UUID."""
    full = uuid128(uuid)
    if full.endswith(_BASE_UUID_TAIL) and full.startswith("0000"):
        return int(full[4:8], 16)
    return None


@dataclass(frozen=True, slots=True)
class Advertisement:
    """One advertisement as the session logic needs it (no payload bytes kept)."""

    address: str  # upper case, colons
    name: str | None
    rssi_dbm: int | None
    service_uuids: tuple[str, ...]  # 128-bit lower case, see ``uuid128``


class GattLink(Protocol):
    """One GATT client connection to one peripheral. Not reusable across threads.

    All methods raise TransientDeviceError (retry: link lost, timeout, out of range) or
    PermanentDeviceError (act: pairing refused, service missing); nothing else on
    foreseeable radio trouble.
    """

    @property
    def is_connected(self) -> bool:
        """Whether the link is up now."""
        ...

    def set_disconnect_callback(self, callback: DisconnectCallback | None) -> None:
        """Call ``callback`` (from the event loop) when the link drops for any reason."""
        ...

    async def connect(self, address: str, timeout_s: float) -> None:
        """Connect to ``address`` and discover its services within ``timeout_s``."""
        ...

    async def disconnect(self) -> None:
        """Release the connection. Safe to call when not connected, and twice."""
        ...

    def has_characteristic(self, uuid: str) -> bool:
        """Whether the connected device serves this characteristic (after connect)."""
        ...

    def can_write(self, uuid: str) -> bool:
        """Whether the device serves this characteristic and lets us write it (with response)."""
        ...

    async def read(self, uuid: str) -> bytes:
        """Read a characteristic value."""
        ...

    async def write(self, uuid: str, data: bytes, response: bool = True) -> None:
        """Write a characteristic value, with a write request when ``response``."""
        ...

    async def start_notify(self, uuid: str, callback: NotifyCallback) -> None:
        """Enable notifications/indications; ``callback`` gets each value's bytes."""
        ...

    async def stop_notify(self, uuid: str) -> None:
        """Disable notifications/indications."""
        ...

    async def pair(self) -> None:
        """Pair and bond with the connected device (BlueZ needs an agent for passkeys)."""
        ...


class Scanner(Protocol):
    """Passive source of advertisements from the hub's adapter."""

    async def start(self, callback: AdvertCallback) -> None:
        """Start delivering advertisements to ``callback`` (from the event loop)."""
        ...

    async def stop(self) -> None:
        """Stop delivering advertisements. Safe to call twice."""
        ...


LinkFactory = Callable[[], GattLink]
"""Makes a fresh, unconnected link (one per session)."""

ScannerFactory = Callable[[], Scanner]
"""Makes a fresh, stopped scanner."""


# D-Bus errors that say the adapter or BlueZ itself is in trouble, not one device. They
# feed the adapter recovery ladder (drivers/ble/adapter.py); a device out of range never
# produces one of these.
ADAPTER_ERROR_NAMES: Final = frozenset(
    {
        "org.bluez.Error.NotReady",  # adapter powered off or not initialised
        "org.bluez.Error.InProgress",  # a discovery/connect stuck in a hung controller
        "org.freedesktop.DBus.Error.ServiceUnknown",  # bluetoothd is not running
        "org.freedesktop.DBus.Error.NameHasNoOwner",
        "org.freedesktop.DBus.Error.NoReply",  # bluetoothd is hung
        "org.freedesktop.DBus.Error.Timeout",
        # Not UnknownObject: BlueZ drops a device's object when its adverts age out, so a
        # link sees it for one device. A vanished hci0 shows as NO_ADAPTER here, and the
        # ladder's own probe of /org/bluez/hci0 gets UnknownObject.
    }
)
NO_ADAPTER: Final = "wardlink.NoAdapter"  # bleak found no adapter at all (hci0 missing)
DBUS_UNREACHABLE: Final = "wardlink.DBusUnreachable"  # no system bus socket
# OSErrors that are one device's link or patience, not the stack (translate_bleak_error).
_NOT_THE_STACK: Final = (TimeoutError, ConnectionResetError, BrokenPipeError)


class AdapterObserver(Protocol):
    """Told of every adapter-level outcome of BLE work (the recovery ladder implements it)."""

    def note_error(self, name: str) -> None:
        """An adapter-level error (one of ``ADAPTER_ERROR_NAMES``, ``NO_ADAPTER``...)."""
        ...

    def note_ok(self) -> None:
        """A connection or a scan start went through: the adapter works."""
        ...

    def note_advert(self) -> None:
        """An advertisement (from any device) was heard."""
        ...


def adapter_error_name(exc: BaseException) -> str | None:
    """The adapter-level error behind ``exc`` (or its causes), or None for a device error.

    bleak-retry-connector wraps BlueZ's errors in its own (``raise ... from exc``), so the
    whole cause chain is searched.
    """
    from bleak.exc import (  # noqa: PLC0415 - bleak loads only for BLE drivers
        BleakBluetoothNotAvailableError,
        BleakBluetoothNotAvailableReason,
        BleakDBusError,
    )

    seen: BaseException | None = exc
    for _ in range(8):  # a cause chain is short; never loop on a cycle
        if seen is None:
            return None
        if isinstance(seen, BleakDBusError) and seen.dbus_error in ADAPTER_ERROR_NAMES:
            return seen.dbus_error
        if isinstance(seen, BleakBluetoothNotAvailableError):
            off = seen.reason is BleakBluetoothNotAvailableReason.POWERED_OFF
            return "org.bluez.Error.NotReady" if off else NO_ADAPTER
        if isinstance(seen, OSError) and not isinstance(seen, _NOT_THE_STACK):
            return DBUS_UNREACHABLE  # no bus socket, refused: the hub's stack is down
        seen = seen.__cause__ or seen.__context__
    return None


def translate_bleak_error(exc: BaseException, action: str) -> TransientDeviceError | None:
    """Map a bleak/BlueZ/timeout exception to our hierarchy; None if it is not one.

    Args:
        exc: what bleak or bleak-retry-connector raised.
        action: what we were doing, e.g. "reading 2A25", for the message.

    Returns:
        The error to raise from ``exc``, or None when ``exc`` is not a radio error (a bug).
    """
    from bleak.exc import BleakError  # noqa: PLC0415 - bleak loads only for BLE drivers

    if isinstance(exc, TimeoutError):
        return TransientDeviceError(f"timed out {action}; {ADVICE_RANGE}")
    if isinstance(exc, EOFError | BrokenPipeError | ConnectionResetError):
        return TransientDeviceError(f"link lost while {action}; {ADVICE_RANGE}")
    if isinstance(exc, OSError):
        # No D-Bus socket or no bluetoothd: the hub's stack, not the device, is down.
        return TransientDeviceError(
            f"Bluetooth stack unreachable while {action} ({exc.strerror or exc}); "
            f"{ADVICE_ADAPTER} and `systemctl status bluetooth` must show it running"
        )
    if isinstance(exc, BleakError):
        return TransientDeviceError(
            f"Bluetooth error while {action} ({type(exc).__name__}); {ADVICE_RANGE}"
        )
    return None


ClientConnector = Callable[[str, float, Callable[["BleakClient"], None]], Awaitable["BleakClient"]]
"""Connects to an address and returns a connected BleakClient (tests inject a fake)."""


async def connect_with_retry(
    address: str, timeout_s: float, on_disconnect: Callable[[BleakClient], None]
) -> BleakClient:
    """The production connector: find the device, then ``establish_connection``."""
    from bleak import BleakClient, BleakScanner  # noqa: PLC0415 - lazy: BLE drivers only
    from bleak_retry_connector import establish_connection, get_device  # noqa: PLC0415

    # The driver connects right after hearing an advert, so BlueZ's cache usually has
    # the device; a fresh scan (half the budget, leaving the rest to connect) otherwise.
    device: BLEDevice | None = await get_device(address)
    if device is None:
        device = await BleakScanner.find_device_by_address(address, timeout=timeout_s / 2)
    if device is None:
        raise TransientDeviceError(f"device not advertising; {ADVICE_RANGE}")
    client: BleakClient = await establish_connection(
        BleakClient, device, address, disconnected_callback=on_disconnect, max_attempts=3
    )
    return client


class BleakLink:
    """``GattLink`` over bleak on BlueZ (production)."""

    def __init__(
        self,
        connector: ClientConnector = connect_with_retry,
        op_timeout_s: float = _OP_TIMEOUT_S,
        observer: AdapterObserver | None = None,
    ) -> None:
        """Store the connector; no I/O. Tests pass a connector returning a fake client.

        ``observer`` (the adapter recovery ladder) hears of adapter-level errors and of
        successful connections.
        """
        self._connector = connector
        self._op_timeout_s = op_timeout_s
        self._observer = observer
        self._client: BleakClient | None = None
        self._on_disconnect: DisconnectCallback | None = None

    @property
    def is_connected(self) -> bool:
        """Whether the link is up now."""
        return self._client is not None and self._client.is_connected

    def set_disconnect_callback(self, callback: DisconnectCallback | None) -> None:
        """Call ``callback`` when the link drops."""
        self._on_disconnect = callback

    def _dropped(self, _client: BleakClient) -> None:
        if self._on_disconnect is not None:
            self._on_disconnect()

    async def connect(self, address: str, timeout_s: float) -> None:
        """Connect (with bleak-retry-connector's retries) within ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                self._client = await self._connector(address, timeout_s, self._dropped)
        except (TransientDeviceError, PermanentDeviceError):
            raise
        except Exception as exc:
            raise self._translate(exc, "connecting") from exc
        if self._observer is not None:
            self._observer.note_ok()

    async def disconnect(self) -> None:
        """Release the connection (frees a BlueZ connection slot)."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            async with asyncio.timeout(self._op_timeout_s):
                await client.disconnect()
        except Exception as exc:
            raise self._translate(exc, "disconnecting") from exc

    def has_characteristic(self, uuid: str) -> bool:
        """Whether the connected device serves this characteristic."""
        client = self._require()
        return client.services.get_characteristic(uuid128(uuid)) is not None

    def can_write(self, uuid: str) -> bool:
        """Whether the characteristic's properties include a write with response."""
        char = self._require().services.get_characteristic(uuid128(uuid))
        return char is not None and "write" in char.properties

    async def read(self, uuid: str) -> bytes:
        """Read a characteristic value."""
        client = self._require()
        try:
            async with asyncio.timeout(self._op_timeout_s):
                return bytes(await client.read_gatt_char(uuid128(uuid)))
        except Exception as exc:
            raise self._translate(exc, f"reading {uuid}") from exc

    async def write(self, uuid: str, data: bytes, response: bool = True) -> None:
        """Write a characteristic value."""
        client = self._require()
        try:
            async with asyncio.timeout(self._op_timeout_s):
                await client.write_gatt_char(uuid128(uuid), data, response=response)
        except Exception as exc:
            raise self._translate(exc, f"writing {uuid}") from exc

    async def start_notify(self, uuid: str, callback: NotifyCallback) -> None:
        """Enable notifications/indications."""
        client = self._require()

        def deliver(_char: BleakGATTCharacteristic, data: bytearray) -> None:
            callback(bytes(data))

        try:
            async with asyncio.timeout(self._op_timeout_s):
                await client.start_notify(uuid128(uuid), deliver)
        except Exception as exc:
            raise self._translate(exc, f"subscribing to {uuid}") from exc

    async def stop_notify(self, uuid: str) -> None:
        """Disable notifications/indications."""
        client = self._require()
        try:
            async with asyncio.timeout(self._op_timeout_s):
                await client.stop_notify(uuid128(uuid))
        except Exception as exc:
            raise self._translate(exc, f"unsubscribing from {uuid}") from exc

    async def pair(self) -> None:
        """Pair via BlueZ ``Device1.Pair``; a refusal needs a person, so it is permanent."""
        client = self._require()
        try:
            async with asyncio.timeout(_PAIR_TIMEOUT_S):
                await client.pair()
        except TimeoutError as exc:
            raise PermanentDeviceError(f"pairing timed out; {ADVICE_PAIR}") from exc
        except Exception as exc:
            if self._translate(exc, "pairing") is exc:
                raise  # not a radio error: a bug, let it propagate
            raise PermanentDeviceError(f"pairing failed; {ADVICE_PAIR}") from exc

    def _require(self) -> BleakClient:
        if self._client is None or not self._client.is_connected:
            raise TransientDeviceError(f"not connected; {ADVICE_RANGE}")
        return self._client

    def _translate(self, exc: Exception, action: str) -> Exception:
        from bleak.exc import BleakCharacteristicNotFoundError  # noqa: PLC0415

        _observe(self._observer, exc)

        if isinstance(exc, BleakCharacteristicNotFoundError):
            return PermanentDeviceError(f"{action}: characteristic missing; {ADVICE_PROFILE}")
        translated = translate_bleak_error(exc, action)
        # Not a radio error: a bug of ours or of bleak. Let it propagate unchanged.
        return exc if translated is None else translated


class BleakAdvertScanner:
    """``Scanner`` over bleak's BleakScanner (production)."""

    def __init__(self, observer: AdapterObserver | None = None) -> None:
        """No I/O: the BleakScanner is made on start. ``observer``: see ``BleakLink``."""
        from bleak import BleakScanner  # noqa: PLC0415

        self._scanner: BleakScanner | None = None
        self._scanner_class = BleakScanner
        self._observer = observer

    async def start(self, callback: AdvertCallback) -> None:
        """Start an active scan delivering every advertisement to ``callback``."""

        def detected(device: BLEDevice, adv: AdvertisementData) -> None:
            if self._observer is not None:
                self._observer.note_advert()
            callback(
                Advertisement(
                    address=device.address.upper(),
                    name=adv.local_name,
                    rssi_dbm=adv.rssi,
                    service_uuids=tuple(uuid128(u) for u in adv.service_uuids),
                )
            )

        self._scanner = self._scanner_class(detection_callback=detected)
        try:
            async with asyncio.timeout(_OP_TIMEOUT_S):
                await self._scanner.start()
        except Exception as exc:
            _observe(self._observer, exc)
            translated = translate_bleak_error(exc, "starting a scan")
            if translated is None:
                raise
            raise translated from exc
        if self._observer is not None:
            self._observer.note_ok()

    async def stop(self) -> None:
        """Stop scanning; safe twice."""
        scanner, self._scanner = self._scanner, None
        if scanner is None:
            return
        try:
            async with asyncio.timeout(_OP_TIMEOUT_S):
                await scanner.stop()
        except Exception as exc:
            translated = translate_bleak_error(exc, "stopping a scan")
            if translated is None:
                raise
            raise translated from exc


def _observe(observer: AdapterObserver | None, exc: BaseException) -> None:
    """Tell the observer when ``exc`` is the adapter's trouble rather than the device's."""
    if observer is None:
        return
    name = adapter_error_name(exc)
    if name is not None:
        observer.note_error(name)
