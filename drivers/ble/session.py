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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from zoneinfo import ZoneInfo

from agent.errors import DecodeError, OutboxError, PermanentDeviceError
from agent.readings import DeviceIdentity
from drivers._codecs.battery import decode_battery_level
from drivers._codecs.cts import decode_current_time
from drivers._codecs.dis import decode_dis_string
from drivers.base import DeviceState

if TYPE_CHECKING:
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
        # The values stay out of the log line: DEBUG only.
        log.warning("device %s refused: serial mismatch", bound.device_id)
        log.debug("device %s: %s", bound.device_id, reason)
        raise PermanentDeviceError(reason)
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


async def read_clock_offset(
    link: GattLink, reporter: DeviceReporter, received: HubTime, timezone_name: str
) -> float | None:
    """Device clock minus hub clock in seconds (Current Time Service), or None.

    Device clocks are local wall time with no zone (ble-profiles.md §0), so the hub's UTC
    time is converted to the patient's zone before subtracting.
    """
    if not link.has_characteristic(CURRENT_TIME):
        return None
    try:
        device_now = decode_current_time(await link.read(CURRENT_TIME)).date_time.to_datetime()
    except DecodeError as exc:
        reporter.count("decode_errors")
        log.warning("current time unreadable: %s", exc.field)
        return None
    if device_now is None:  # clock never set: no meaningful offset
        return None
    hub_local = received.utc.astimezone(ZoneInfo(timezone_name)).replace(tzinfo=None)
    offset_s = (device_now - hub_local).total_seconds()
    reporter.set_clock_offset(offset_s)
    return offset_s


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
