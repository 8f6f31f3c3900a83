"""Emulated BLE health devices (bumble peripherals) with the real SIG GATT services.

Every peripheral serves Device Information (0x180A: manufacturer, model, serial,
firmware), Battery (0x180F) and, unless told not to, Current Time (0x1805), plus its
profile service. Measurements are held as the exact bytes a device would send (built by
drivers/emulators/ble_payloads.py), so the hub decodes real ATT values.

Behaviours tests rely on, each modelled on real devices (ble-profiles.md §3.4, §7.4):

- ``StoredRecordsPeripheral`` (BP cuff, thermometer, scale, spot-check oximeter) RE-SENDS
  every stored record as indications each time the hub subscribes, like cuffs do;
- ``StreamingPeripheral`` (heart rate, PLX continuous) notifies at ``period_s``;
- ``GlucoseMeter`` answers RACP "report records >= N" / "number of records" / abort;
- any of them can drop the link from the peripheral side after N records
  (``drop_after_records``), stop/start advertising and change its serial number.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from bumble.core import AdvertisingData
from bumble.gatt import Characteristic, CharacteristicValue, Service

from agent.errors import DecodeError
from drivers._codecs.racp import (
    OpCode,
    Operator,
    RacpRequest,
    ResponseCode,
    decode_racp_request,
)
from drivers.emulators.ble import make_device
from drivers.emulators.ble_payloads import encode_racp_number_of_records, encode_racp_response

if TYPE_CHECKING:
    from collections.abc import Callable

    from bumble.device import Connection, Device

    from drivers.emulators.ble import BleWorld

logger = logging.getLogger(__name__)

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
            cts: Characteristic[bytes] = Characteristic(
                "2A2B", _R | _N, _READABLE, CharacteristicValue(read=self._now)
            )
            services.append(Service("1805", [cts]))
        return services

    def _dis(self, attr: str) -> Callable[[Connection], bytes]:
        return lambda _conn: str(getattr(self.info, attr)).encode()

    def _battery(self, _conn: Connection) -> bytes:
        return bytes([self.info.battery_percent])

    def _now(self, _conn: Connection) -> bytes:
        offset = timedelta(seconds=self.info.clock_offset_s or 0.0)
        # Device clocks are local wall clocks with no zone; the emulator uses the host's.
        return current_time_bytes(datetime.now() + offset)  # noqa: DTZ005

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


class StoredRecordsPeripheral(EmulatedPeripheral):
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
        """Configure the profile's service and its indicated measurement characteristic."""
        super().__init__(address, name, info)
        self.service_uuid = service_uuid
        self.records: list[bytes] = []
        self.measurement = Characteristic(measurement_uuid, _I, _READABLE, b"")

    def profile_characteristics(self) -> list[Characteristic[Any]]:
        """The measurement characteristic (indicate)."""
        self.measurement.on("subscription", self._on_subscription)
        return [self.measurement]

    def _on_subscription(self, _bearer: Any, notify: bool, indicate: bool) -> None:  # noqa: ANN401
        if indicate or notify:
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


class StreamingPeripheral(EmulatedPeripheral):
    """Notifies ``next_payload()`` every ``period_s`` while the hub is subscribed."""

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
        super().__init__(address, name, info)
        self.service_uuid = service_uuid
        self.payloads = payloads
        self.period_s = period_s
        self.measurement = Characteristic(measurement_uuid, _N, _READABLE, b"")
        self._streaming: asyncio.Task[None] | None = None

    def profile_characteristics(self) -> list[Characteristic[Any]]:
        """The measurement characteristic (notify)."""
        self.measurement.on("subscription", self._on_subscription)
        return [self.measurement]

    def _on_subscription(self, _bearer: Any, notify: bool, indicate: bool) -> None:  # noqa: ANN401
        if (notify or indicate) and (self._streaming is None or self._streaming.done()):
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


@dataclass
class MeterRecord:
    """One stored glucose record: its sequence number, measurement and optional context."""

    sequence: int
    measurement: bytes
    context: bytes | None = None


@dataclass
class _RacpState:
    busy: bool = False
    aborted: bool = False
    requests: list[bytes] = field(default_factory=list)


class GlucoseMeter(EmulatedPeripheral):
    """Glucose Service 0x1808 with stored records and a Record Access Control Point."""

    service_uuid = "1808"

    def __init__(self, address: str, name: str, info: DeviceInfo | None = None) -> None:
        """An empty meter; tests add records with ``add_record``."""
        super().__init__(address, name, info)
        self.records: list[MeterRecord] = []
        self.racp = _RacpState()
        self.measurement = Characteristic("2A18", _N, _READABLE, b"")
        self.context = Characteristic("2A34", _N, _READABLE, b"")
        self.feature = Characteristic("2A51", _R, _READABLE, b"\x00\x00")
        self.control_point: Characteristic[bytes] = Characteristic(
            "2A52", _W | _I, _RW, CharacteristicValue(write=self._on_racp_write)
        )

    def profile_characteristics(self) -> list[Characteristic[Any]]:
        """Measurement, context, feature and RACP."""
        return [self.measurement, self.context, self.feature, self.control_point]

    def add_record(self, record: MeterRecord) -> None:
        """Store a record (a meter does not push it: the hub asks through RACP)."""
        self.records.append(record)

    def _on_racp_write(self, _conn: Connection, value: bytes) -> None:
        self.racp.requests.append(bytes(value))
        self._spawn(self._handle_racp(bytes(value)))

    async def _handle_racp(self, request: bytes) -> None:
        try:
            decoded = decode_racp_request(request)
        except DecodeError:
            op = request[0] if request else 0
            await self._respond(encode_racp_response(op, ResponseCode.OPERATOR_NOT_SUPPORTED))
            return
        if decoded.op_code == OpCode.ABORT_OPERATION:
            self.racp.aborted = True
            await self._respond(encode_racp_response(OpCode.ABORT_OPERATION, ResponseCode.SUCCESS))
            return
        selected = self._select(decoded)
        if decoded.op_code == OpCode.REPORT_NUMBER_OF_RECORDS:
            await self._respond(encode_racp_number_of_records(len(selected)))
        elif decoded.op_code == OpCode.REPORT_STORED_RECORDS:
            await self._report(selected)
        else:  # this meter never deletes: a patient's meter is not ours to clear
            await self._respond(
                encode_racp_response(decoded.op_code, ResponseCode.OP_CODE_NOT_SUPPORTED)
            )

    def _select(self, request: RacpRequest) -> list[MeterRecord]:
        if request.operator == Operator.LAST_RECORD:
            return self.records[-1:]
        if request.operator == Operator.FIRST_RECORD:
            return self.records[:1]
        low = request.min_sequence if request.min_sequence is not None else 0
        high = request.max_sequence if request.max_sequence is not None else 0xFFFF
        return [r for r in self.records if low <= r.sequence <= high]

    async def _report(self, selected: list[MeterRecord]) -> None:
        self.racp.busy, self.racp.aborted = True, False
        try:
            for record in selected:
                if self.racp.aborted:
                    return
                if not await self._send(self.measurement, record.measurement, indicate=False):
                    return
                if record.context is not None and not await self._send(
                    self.context, record.context, indicate=False
                ):
                    return
            code = ResponseCode.SUCCESS if selected else ResponseCode.NO_RECORDS_FOUND
            await self._respond(encode_racp_response(OpCode.REPORT_STORED_RECORDS, code))
        finally:
            self.racp.busy = False

    async def _respond(self, pdu: bytes) -> None:
        device = self._require()
        if device.connections:
            await device.indicate_subscribers(self.control_point, pdu)
