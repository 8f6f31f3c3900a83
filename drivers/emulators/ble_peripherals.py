"""Emulated BLE health devices (bumble peripherals) with the real SIG GATT services.

Every peripheral serves Device Information (0x180A: manufacturer, model, serial,
firmware), Battery (0x180F) and, unless told not to, Current Time (0x1805), plus its
profile service. Measurements are held as the exact bytes a device would send (built by
drivers/emulators/ble_payloads.py), so the hub decodes real ATT values.

Behaviours tests rely on, each modelled on real devices (ble-profiles.md §3.4, §7.4):

- ``StoredRecordsPeripheral`` (BP cuff, thermometer, scale, spot-check oximeter) RE-SENDS
  every stored record as indications each time the hub subscribes, like cuffs do;
- ``StreamingPeripheral`` (heart rate, PLX continuous) notifies at ``period_s``;
- ``GlucoseMeter`` (ble_glucose_meter.py) answers RACP "report records >= N",
  "number of records" and abort;
- any of them can drop the link from the peripheral side after N records
  (``drop_after_records``), stop/start advertising and change its serial number.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from bumble.att import ATT_Error, ErrorCode
from bumble.core import AdvertisingData
from bumble.gatt import Characteristic, CharacteristicValue, Service

from agent.errors import DecodeError
from drivers._codecs.cts import decode_current_time
from drivers.emulators.ble import make_device

if TYPE_CHECKING:
    from collections.abc import Callable

    from bumble.device import Connection, Device

    from drivers.emulators.ble import BleWorld

logger = logging.getLogger(__name__)

# GATT property and permission shorthands (ble_glucose_meter.py uses them too).
_R: Final = Characteristic.Properties.READ
_N: Final = Characteristic.Properties.NOTIFY
_I: Final = Characteristic.Properties.INDICATE
_W: Final = Characteristic.Properties.WRITE
_READABLE: Final = Characteristic.READABLE
_RW: Final = Characteristic.READABLE | Characteristic.WRITEABLE


@dataclass
class DeviceInfo:
    """What the peripheral says of itself in Device Information and Battery."""

    manufacturer: str = "Emulated Medical"
    model: str = "EM-1"
    serial_number: str = "SN0001"
    firmware: str = "1.0.0"
    battery_percent: int = 87
    clock_offset_s: float | None = 0.0  # device clock minus host clock; None: no CTS
    clock_unset: bool = False  # Current Time reads year 0 ("never set") until written
    clock_writable: bool = True  # Current Time accepts writes (optional in CTS)


def current_time_bytes(when: datetime) -> bytes:
    """Current Time 0x2A2B (10 bytes): Date Time, day of week, fractions256, reason 0."""
    return struct.pack(
        "<HBBBBBBBB",
        when.year,
        when.month,
        when.day,
        when.hour,
        when.minute,
        when.second,
        when.isoweekday(),
        int(when.microsecond * 256 / 1_000_000),
        0,
    )


class EmulatedPeripheral:
    """A bumble peripheral with DIS, Battery, CTS and one profile service."""

    service_uuid: str = ""  # 16-bit, e.g. "1810"

    def __init__(self, address: str, name: str, info: DeviceInfo | None = None) -> None:
        """Store identity; the bumble Device is made by ``attach``."""
        self.address = address.upper()
        self.name = name
        self.info = info or DeviceInfo()
        self.device: Device | None = None
        self.drop_after_records: int | None = None  # drop the link after this many sends
        self.records_sent = 0  # in the current connection
        self.connections_seen = 0
        self.paired = False  # a bond was made (Just Works, bumble's default delegate)
        self.clock_writes: list[bytes] = []  # Current Time values the hub wrote
        self._tasks: set[asyncio.Task[None]] = set()

    def profile_characteristics(self) -> list[Characteristic[Any]]:
        """The profile service's characteristics (subclasses)."""
        raise NotImplementedError

    def _standard_services(self) -> list[Service]:
        dis = Service(
            "180A",
            [
                Characteristic(
                    "2A29", _R, _READABLE, CharacteristicValue(read=self._dis("manufacturer"))
                ),
                Characteristic("2A24", _R, _READABLE, CharacteristicValue(read=self._dis("model"))),
                Characteristic(
                    "2A25", _R, _READABLE, CharacteristicValue(read=self._dis("serial_number"))
                ),
                Characteristic(
                    "2A26", _R, _READABLE, CharacteristicValue(read=self._dis("firmware"))
                ),
            ],
        )
        battery = Service(
            "180F",
            [Characteristic("2A19", _R, _READABLE, CharacteristicValue(read=self._battery))],
        )
        services = [dis, battery]
        if self.info.clock_offset_s is not None:
            writable = self.info.clock_writable
            cts: Characteristic[bytes] = Characteristic(
                "2A2B",
                _R | _N | _W if writable else _R | _N,
                _RW if writable else _READABLE,
                CharacteristicValue(read=self._now, write=self._set_time if writable else None),
            )
            services.append(Service("1805", [cts]))
        return services

    def _dis(self, attr: str) -> Callable[[Connection], bytes]:
        return lambda _conn: str(getattr(self.info, attr)).encode()

    def _battery(self, _conn: Connection) -> bytes:
        return bytes([self.info.battery_percent])

    def _now(self, _conn: Connection) -> bytes:
        if self.info.clock_unset:
            return bytes(10)  # Date Time all zero: year, month and day "not known"
        offset = timedelta(seconds=self.info.clock_offset_s or 0.0)
        # Device clocks are local wall clocks with no zone; the emulator uses the host's.
        return current_time_bytes(datetime.now() + offset)  # noqa: DTZ005

    def _set_time(self, _conn: Connection, value: bytes) -> None:
        """The hub set the clock: keep the offset it implies (and what it wrote)."""
        self.clock_writes.append(bytes(value))
        try:
            written = decode_current_time(bytes(value)).date_time.to_datetime()
        except DecodeError as exc:
            raise ATT_Error(ErrorCode.INVALID_ATTRIBUTE_LENGTH) from exc
        if written is None:
            raise ATT_Error(ErrorCode.VALUE_NOT_ALLOWED)
        self.info.clock_unset = False
        self.info.clock_offset_s = (written - datetime.now()).total_seconds()  # noqa: DTZ005

    async def attach(self, world: BleWorld) -> None:
        """Create the bumble Device on the world's link, serve GATT and advertise."""
        await self.attach_device(make_device(world.require_link(), self.name, self.address))

    async def attach_device(self, device: Device) -> None:
        """Serve GATT on ``device`` (any bumble transport) and advertise."""
        self.device = device
        self.device.add_services(self._standard_services())
        self.device.add_service(Service(self.service_uuid, self.profile_characteristics()))
        self.device.on("connection", self._on_connection)
        await self.device.power_on()
        await self.start_advertising()

    def _on_connection(self, connection: Connection) -> None:
        self.connections_seen += 1
        self.records_sent = 0
        connection.on(connection.EVENT_PAIRING, self._on_paired)

    def _on_paired(self, _keys: object) -> None:
        self.paired = True

    async def start_advertising(self) -> None:
        """Advertise name + profile service; re-advertise after every disconnection."""
        device = self._require()
        adv = AdvertisingData(
            [
                (AdvertisingData.COMPLETE_LOCAL_NAME, self.name.encode()),
                (
                    AdvertisingData.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
                    struct.pack("<H", int(self.service_uuid, 16)),
                ),
            ]
        )
        await device.start_advertising(
            advertising_data=bytes(adv), auto_restart=True, advertising_interval_min=20.0
        )

    async def stop_advertising(self) -> None:
        """Go silent (a cuff switched off, or out of range)."""
        await self._require().stop_advertising()

    async def drop_link(self) -> None:
        """Disconnect from the peripheral side (walked out of range, battery pulled)."""
        for connection in list(self._require().connections.values()):
            await connection.disconnect()

    @property
    def is_connected(self) -> bool:
        """Whether the hub is connected now."""
        return bool(self.device is not None and self.device.connections)

    def _require(self) -> Device:
        if self.device is None:
            raise RuntimeError("attach() was not awaited")
        return self.device

    async def _send(self, char: Characteristic[Any], payload: bytes, indicate: bool) -> bool:
        """Send one value to every subscriber; False once the link is (deliberately) gone."""
        device = self._require()
        if not device.connections:
            return False
        if self.drop_after_records is not None and self.records_sent >= self.drop_after_records:
            self.drop_after_records = None
            await self.drop_link()
            return False
        if indicate:
            await device.indicate_subscribers(char, payload)
        else:
            await device.notify_subscribers(char, payload)
        self.records_sent += 1
        return True

    def _spawn(self, coro: Any) -> None:  # noqa: ANN401 - a coroutine
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Cancel background sends and drop links."""
        for task in list(self._tasks):
            task.cancel()
        if self.device is not None and self.device.connections:
            await self.drop_link()


class _MeasurementPeripheral(EmulatedPeripheral):
    """A profile service with one measurement characteristic; subclasses say what to send."""

    def __init__(
        self,
        address: str,
        name: str,
        *,
        service_uuid: str,
        measurement_uuid: str,
        properties: Characteristic.Properties,
        info: DeviceInfo | None = None,
    ) -> None:
        """Configure the profile's service and its measurement characteristic."""
        super().__init__(address, name, info)
        self.service_uuid = service_uuid
        self.measurement: Characteristic[bytes] = Characteristic(
            measurement_uuid, properties, _READABLE, b""
        )
        self.measurement.on("subscription", self._on_subscription)

    def profile_characteristics(self) -> list[Characteristic[Any]]:
        """The measurement characteristic."""
        return [self.measurement]

    def _on_subscription(self, _bearer: Any, notify: bool, indicate: bool) -> None:  # noqa: ANN401
        if notify or indicate:
            self.on_subscribed()

    def on_subscribed(self) -> None:
        """The hub enabled notifications or indications."""
        raise NotImplementedError


class StoredRecordsPeripheral(_MeasurementPeripheral):
    """Indicates all stored records on every subscription, then any new ones.

    Models BP cuffs, thermometers, scales and spot-check oximeters, which burst their
    memory on each connection (the hub dedupes on the natural key).
    """

    def __init__(
        self,
        address: str,
        name: str,
        *,
        service_uuid: str,
        measurement_uuid: str,
        info: DeviceInfo | None = None,
    ) -> None:
        """An empty memory; tests and demos fill ``records``."""
        super().__init__(
            address,
            name,
            service_uuid=service_uuid,
            measurement_uuid=measurement_uuid,
            properties=_I,
            info=info,
        )
        self.records: list[bytes] = []

    def on_subscribed(self) -> None:
        """Burst the whole memory."""
        self._spawn(self._send_stored())

    async def _send_stored(self) -> None:
        for payload in list(self.records):
            if not await self._send(self.measurement, payload, indicate=True):
                return

    async def add_measurement(self, payload: bytes) -> None:
        """Store a new record and indicate it now if the hub is connected."""
        self.records.append(payload)
        if self.is_connected:
            await self._send(self.measurement, payload, indicate=True)


class StreamingPeripheral(_MeasurementPeripheral):
    """Notifies ``payloads`` in turn, every ``period_s``, while the hub is subscribed."""

    def __init__(
        self,
        address: str,
        name: str,
        *,
        service_uuid: str,
        measurement_uuid: str,
        payloads: list[bytes],
        period_s: float = 1.0,
        info: DeviceInfo | None = None,
    ) -> None:
        """``payloads`` are sent in turn, cycling."""
        super().__init__(
            address,
            name,
            service_uuid=service_uuid,
            measurement_uuid=measurement_uuid,
            properties=_N,
            info=info,
        )
        self.payloads = payloads
        self.period_s = period_s
        self._streaming: asyncio.Task[None] | None = None

    def on_subscribed(self) -> None:
        """Start the stream (once)."""
        if self._streaming is None or self._streaming.done():
            self._streaming = asyncio.get_running_loop().create_task(self._stream())
            self._tasks.add(self._streaming)

    async def _stream(self) -> None:
        index = 0
        while True:
            payload = self.payloads[index % len(self.payloads)]
            if not await self._send(self.measurement, payload, indicate=False):
                return
            index += 1
            await asyncio.sleep(self.period_s)
