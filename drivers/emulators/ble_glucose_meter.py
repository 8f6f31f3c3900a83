"""An emulated glucose meter: Glucose Service 0x1808 with stored records and RACP.

The meter never pushes records: the hub asks through the Record Access Control Point
(ble-profiles.md §7.4). It answers "report all / >= N / first / last", "number of
records" and "abort", and never deletes (the hub must not ask it to).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bumble.gatt import Characteristic, CharacteristicValue

from agent.errors import DecodeError
from drivers._codecs.racp import (
    OpCode,
    Operator,
    RacpRequest,
    ResponseCode,
    decode_racp_request,
)
from drivers.emulators.ble_payloads import encode_racp_number_of_records, encode_racp_response
from drivers.emulators.ble_peripherals import (
    _I,
    _N,
    _R,
    _READABLE,
    _RW,
    _W,
    DeviceInfo,
    EmulatedPeripheral,
)

if TYPE_CHECKING:
    from bumble.device import Connection


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
