"""Per-connection steps shared by every BLE profile driver.

Identity (Device Information), battery and device clock are read once per connection,
before any measurement is accepted: a device whose serial differs from the one recorded
at install is refused (reliability.md §4.4), so a neighbour's cuff can never file
readings under this patient. The glucose RACP cursor lives here too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final

from agent.clock import device_clock_offset_s, hub_wall_time
from agent.errors import DecodeError, OutboxError, PermanentDeviceError, TransientDeviceError
from agent.readings import DeviceIdentity
from drivers._codecs.battery import decode_battery_level
from drivers._codecs.cts import current_time_at, decode_current_time, encode_current_time
from drivers._codecs.dis import decode_dis_string
from drivers.base import DeviceState

if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path

    from agent.clock import HubTime
    from drivers._ble import GattLink
    from drivers.base import DeviceReporter

log = logging.getLogger(__name__)

DIS_MANUFACTURER: Final = "2A29"
DIS_MODEL: Final = "2A24"
DIS_SERIAL: Final = "2A25"
DIS_FIRMWARE: Final = "2A26"
BATTERY_LEVEL: Final = "2A19"
CURRENT_TIME: Final = "2A2B"
SERIAL_MISMATCH_LOG: Final = "serial mismatch; the device status says what to check"


@dataclass(frozen=True, slots=True)
class BoundDevice:
    """What the config says this device must be."""

    device_id: str
    driver: str
    address: str
    serial_number: str | None


async def _read_string(link: GattLink, uuid: str, reporter: DeviceReporter) -> str | None:
    if not link.has_characteristic(uuid):
        return None
    try:
        return decode_dis_string(await link.read(uuid))
    except DecodeError as exc:
        reporter.count("decode_errors")
        log.warning("device information %s unreadable: %s", uuid, exc.field)
        return None


async def read_identity(
    link: GattLink, bound: BoundDevice, reporter: DeviceReporter
) -> DeviceIdentity:
    """Read Device Information and refuse a device that is not the bound one.

    Raises:
        PermanentDeviceError: ``bound.serial_number`` is set and the device reports another
            (or none). The device state is set to ERROR with actionable text first.
    """
    serial = await _read_string(link, DIS_SERIAL, reporter)
    if bound.serial_number is not None and serial != bound.serial_number:
        reason = (
            f"serial mismatch: expected {bound.serial_number}, device reports "
            f"{serial or 'no serial'}; check the device at {bound.address} is this "
            "patient's, then re-pair it or correct serial_number in the config"
        )
        reporter.set_state(DeviceState.ERROR, reason)
        # Serials and address go to the device status (for the technician) and to DEBUG;
        # log lines at INFO and above (here and the supervisor's) say "serial mismatch".
        log.warning("device %s refused: serial mismatch", bound.device_id)
        log.debug("device %s: %s", bound.device_id, reason)
        raise PermanentDeviceError(reason, log_text=SERIAL_MISMATCH_LOG)
    identity = DeviceIdentity(
        device_id=bound.device_id,
        driver=bound.driver,
        address=bound.address,
        manufacturer=await _read_string(link, DIS_MANUFACTURER, reporter),
        model=await _read_string(link, DIS_MODEL, reporter),
        serial_number=serial,
        firmware=await _read_string(link, DIS_FIRMWARE, reporter),
    )
    reporter.set_identity(identity)
    return identity


async def read_battery(link: GattLink, reporter: DeviceReporter) -> None:
    """Report the battery level, when the device has a Battery Service."""
    if not link.has_characteristic(BATTERY_LEVEL):
        return
    try:
        reporter.set_battery(decode_battery_level(await link.read(BATTERY_LEVEL)).percent)
    except DecodeError as exc:
        reporter.count("decode_errors")
        log.warning("battery level unreadable: %s", exc.field)


@dataclass(frozen=True, slots=True)
class DeviceClock:
    """What one connection learned of the device clock (Current Time 0x2A2B).

    ``offset_s`` is device minus hub, measured BEFORE any write: the records the device
    sends in this session were stamped by that clock, so it is the correction for them.
    """

    offset_s: float | None = None
    unset: bool = False  # the device says its clock was never set (or it is before 2010)
    set_by_hub: bool = False  # the hub wrote its time to the device on this connection

    def reading_status(self) -> tuple[str, ...]:
        """Flags carried by every reading of this session."""
        return ("device_clock_set_by_hub",) if self.set_by_hub else ()


# Off by more than this, a device clock is set from a synchronised hub. Small enough that
# a corrected time is never far off; large enough not to write on every connection for
# a few seconds of drift (some devices log every time change).
CLOCK_WRITE_THRESHOLD_S: Final = 60.0


async def check_device_clock(
    link: GattLink, reporter: DeviceReporter, received: HubTime, timezone_name: str
) -> DeviceClock:
    """Read the device clock, record its offset, and set it from the hub when safe.

    Device clocks are local wall time with no zone (ble-profiles.md §0), so the hub's UTC
    time is converted to the patient's zone. The hub writes Current Time only when all of
    these hold: the hub clock is synchronised (a Pi without NTP would spread its own
    error), the device clock is unset or off by more than ``CLOCK_WRITE_THRESHOLD_S``, and
    the device lets us write 0x2A2B (write is optional in CTS). A refused write is counted
    and the session goes on: the offset still corrects the readings.
    """
    if not link.has_characteristic(CURRENT_TIME):
        return DeviceClock()
    try:
        device_now = decode_current_time(await link.read(CURRENT_TIME)).date_time.to_datetime()
    except DecodeError as exc:
        reporter.count("decode_errors")
        log.warning("current time unreadable: %s", exc.field)
        return DeviceClock()
    hub_local = hub_wall_time(received, timezone_name)
    offset_s = (
        None if device_now is None else device_clock_offset_s(device_now, received, timezone_name)
    )
    if offset_s is None:
        # Never set (year 0, or the 2000-01-01 of a reset): no meaningful offset, and the
        # records it stamped are flagged and placed at receipt time.
        reporter.count("device_clock_unset")
        clock = DeviceClock(unset=True)
    else:
        reporter.set_clock_offset(offset_s)
        clock = DeviceClock(offset_s=offset_s)
        if abs(offset_s) <= CLOCK_WRITE_THRESHOLD_S:
            return clock
    if not received.clock_synced:
        reporter.count("clock_write_skipped_hub_unsynced")
        return clock
    if await _write_clock(link, reporter, hub_local):
        log.info("device clock set from the hub (it was %s)", "unset" if clock.unset else "off")
        return replace(clock, set_by_hub=True)
    return clock


async def _write_clock(link: GattLink, reporter: DeviceReporter, hub_local: datetime) -> bool:
    """Write the hub's local time to Current Time; False (counted) if refused or read-only."""
    if not link.can_write(CURRENT_TIME):
        reporter.count("clock_not_writable")
        return False
    value = encode_current_time(current_time_at(hub_local, ("external_reference_time_update",)))
    try:
        await link.write(CURRENT_TIME, value)
    except TransientDeviceError as exc:
        # CTS may answer 0x80 "data field ignored"; a lost link shows on the next step.
        reporter.count("clock_write_failed")
        log.info("device clock not set: %s", exc)
        return False
    reporter.count("clock_writes")
    return True


def raise_if_cancelled() -> None:
    """Re-raise a cancellation that an expiring ``asyncio.timeout`` swallowed.

    On Python 3.11, a task cancelled in the same loop iteration as its timeout fires
    can see TimeoutError instead of CancelledError (the cancel is then lost and the
    driver would never stop; seen here with the agent shutting down mid-session). The
    task's ``cancelling()`` count still says a cancel was requested.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling() > 0:
        raise asyncio.CancelledError


class GlucoseCursor:
    """The highest glucose sequence number already COMMITTED to the outbox, on disk.

    A small JSON file written atomically (temp file, fsync, rename, fsync of the
    directory) only after ``Outbox.capture`` returned, so a crash can repeat records
    (deduped by natural key) but never skip one.
    """

    def __init__(self, path: Path) -> None:
        """Store the path; no I/O."""
        self.path = path

    def _load_sync(self) -> int | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            # Re-reading everything is safe (the outbox dedupes); losing data is not.
            log.warning("glucose cursor %s unreadable (%s); fetching all records", self.path, exc)
            return None
        value = data.get("last_sequence") if isinstance(data, dict) else None
        return value if isinstance(value, int) and 0 <= value <= 0xFFFF else None  # noqa: PLR2004

    def _store_sync(self, sequence: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump({"last_sequence": sequence}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    async def load(self) -> int | None:
        """The stored sequence, or None when nothing was committed yet."""
        return await asyncio.to_thread(self._load_sync)

    async def store(self, sequence: int) -> None:
        """Durably record ``sequence`` (call only after its readings are committed)."""
        try:
            await asyncio.to_thread(self._store_sync, sequence)
        except OSError as exc:
            raise OutboxError(f"cannot write glucose cursor {self.path}: {exc}") from exc
