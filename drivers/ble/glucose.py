"""Glucose meter transfer: RACP "report records >= cursor + 1", committed record by record.

Procedure (ble-profiles.md §7.4): enable notifications on 0x2A18/0x2A34 and indications
on the RACP 0x2A52, write `01 03 01 <seq+1>` (or `01 01` with no cursor), receive the
burst, and stop at the RACP response (success, or "no records found": nothing new).

A record whose measurement says "context follows" is held until its context arrives
and the two are captured together; if the link drops first, neither is captured and the
cursor does not move, so the meter sends the record again next time. The cursor is
written (fsync) only after ``capture`` returned, i.e. after the COMMIT.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

from agent.errors import DecodeError
from drivers._codecs.gls import (
    GlucoseContext,
    GlucoseMeasurement,
    decode_glucose_context,
    decode_glucose_measurement,
)
from drivers._codecs.racp import (
    OpCode,
    Operator,
    RacpResponse,
    decode_racp_response,
    encode_report_all_records,
    encode_report_records_from,
)
from drivers.ble.mapping import GlucoseRecord
from drivers.ble.session import raise_if_cancelled

if TYPE_CHECKING:
    from agent.readings import DeviceIdentity
    from drivers._ble import GattLink
    from drivers.base import DriverContext
    from drivers.ble.driver import Notification
    from drivers.ble.session import DeviceClock, GlucoseCursor

log = logging.getLogger(__name__)

RACP: Final = "2A52"
MEASUREMENT: Final = 0x2A18
CONTEXT: Final = 0x2A34
_MAX_SEQUENCE: Final = 0xFFFF
_REPORT_LAST_RECORD: Final = bytes((OpCode.REPORT_STORED_RECORDS, Operator.LAST_RECORD))
# A meter with hundreds of records needs a while; ATT's own timeout is 30 s per PDU.
_RACP_TIMEOUT_S: Final = 30.0


class GlucoseTransfer:
    """One RACP transfer over a connected link."""

    def __init__(
        self,
        link: GattLink,
        queue: asyncio.Queue[Notification | None],
        cursor: GlucoseCursor,
        ctx: DriverContext,
        identity: DeviceIdentity,
        clock: DeviceClock,
        idle_s: float,
        driver_version: str,
    ) -> None:
        """Store collaborators; no I/O."""
        self._link = link
        self._queue = queue
        self._cursor = cursor
        self._ctx = ctx
        self._identity = identity
        self._clock = clock
        self._idle_s = max(idle_s, _RACP_TIMEOUT_S)
        self._driver_version = driver_version
        self._pending: tuple[GlucoseMeasurement, Notification] | None = None
        self._last: int | None = None
        self._probing = False
        self._probe_sequence: int | None = None

    async def run(self) -> None:
        """Request the records after the cursor and capture each complete one."""
        self._last = await self._cursor.load()
        await self._link.start_notify(RACP, self._on_racp)
        if self._last is None or self._last >= _MAX_SEQUENCE:
            request = encode_report_all_records()
        else:
            request = encode_report_records_from(self._last + 1)
        response = await self._procedure(request)
        if response is not None and response.is_no_records and self._last is not None:
            await self._check_for_reset()

    async def _check_for_reset(self) -> None:
        """Nothing after the cursor: was the meter's memory cleared (sequence restarted)?

        ble-profiles.md §7.4 step 6: if the newest record's sequence is below the cursor,
        asking for ">= cursor + 1" would miss every new record forever. Fetch all then;
        the outbox dedupes any already captured.
        """
        self._probe_sequence, self._probing = None, True
        try:
            await self._procedure(_REPORT_LAST_RECORD)
        finally:
            self._probing = False
        newest, cursor = self._probe_sequence, self._last
        if newest is None or cursor is None or newest >= cursor:
            return
        self._ctx.reporter.count("glucose_meter_resets")
        log.warning(
            "device %s: meter sequence restarted; fetching all records", self._identity.device_id
        )
        self._last = None  # the first committed record rewrites the cursor
        await self._procedure(encode_report_all_records())

    async def _procedure(self, request: bytes) -> RacpResponse | None:
        """Write one RACP request and handle values until its response (None if cut short)."""
        await self._link.write(RACP, request, response=True)
        while True:
            try:
                async with asyncio.timeout(self._idle_s):
                    item = await self._queue.get()
            except TimeoutError:
                raise_if_cancelled()
                log.warning("device %s: RACP transfer stalled", self._identity.device_id)
                self._ctx.reporter.count("racp_timeouts")
                return None
            if item is None:
                return None  # dropped: a held record is NOT captured; the cursor stays put
            response = await self._handle(item)
            if response is not None:
                return response

    def _on_racp(self, data: bytes) -> None:
        from drivers.ble.driver import Notification  # noqa: PLC0415 - import cycle

        self._queue.put_nowait(Notification(int(RACP, 16), data, self._ctx.clock.now()))

    async def _handle(self, item: Notification) -> RacpResponse | None:
        """Process one value; the RACP response once the procedure has ended."""
        try:
            if item.uuid16 == MEASUREMENT:
                await self._on_measurement(decode_glucose_measurement(item.data), item)
            elif item.uuid16 == CONTEXT:
                await self._on_context(decode_glucose_context(item.data))
            else:
                return await self._on_response(decode_racp_response(item.data))
        except DecodeError as exc:
            self._ctx.reporter.count("decode_errors")
            log.warning(
                "device %s: malformed 0x%04X skipped: %s",
                self._identity.device_id,
                item.uuid16,
                exc.field,
            )
        return None

    async def _on_measurement(self, measurement: GlucoseMeasurement, item: Notification) -> None:
        if self._probing:  # only looking at the newest sequence number
            self._probe_sequence = measurement.sequence_number
            return
        await self._flush_without_context()
        if measurement.context_follows:
            self._pending = (measurement, item)
        else:
            await self._commit(measurement, None, item)

    async def _on_context(self, context: GlucoseContext) -> None:
        if self._probing:
            return
        pending = self._pending
        if pending is None or pending[0].sequence_number != context.sequence_number:
            self._ctx.reporter.count("glucose_context_orphans")
            return
        self._pending = None
        await self._commit(pending[0], context, pending[1])

    async def _on_response(self, response: object) -> RacpResponse | None:
        if not isinstance(response, RacpResponse):
            return None  # a record count: informative only
        await self._flush_without_context()
        if not (response.is_success or response.is_no_records):
            self._ctx.reporter.count("racp_errors")
            log.warning("device %s: RACP answered %s", self._identity.device_id, response.response)
        return response

    async def _flush_without_context(self) -> None:
        # The meter promised a context and moved on without one: keep the measurement.
        if self._pending is not None:
            measurement, item = self._pending
            self._pending = None
            self._ctx.reporter.count("glucose_context_missing")
            await self._commit(measurement, None, item)

    async def _commit(
        self, measurement: GlucoseMeasurement, context: GlucoseContext | None, item: Notification
    ) -> None:
        from drivers.ble.driver import to_readings  # noqa: PLC0415 - import cycle

        readings = to_readings(
            item, self._identity, self._clock, self._ctx, GlucoseRecord(measurement, context)
        )
        if readings:
            await self._ctx.sink.capture(readings)
        sequence = measurement.sequence_number
        if self._last is None or sequence > self._last:
            await self._cursor.store(sequence)  # only now: the COMMIT has returned
            self._last = sequence
