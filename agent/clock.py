"""Hub time: UTC wall clock, monotonic time, boot id and whether the clock is synced.

A Raspberry Pi has no RTC: it may boot in 1970 or at the last saved time and only later
sync by NTP. Capture never waits for sync (reliability.md R5); every reading instead
carries the monotonic time and boot id so its time can be repaired once sync happens.
"""

from __future__ import annotations

import ctypes
import functools
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Final, Protocol
from zoneinfo import ZoneInfo

# Device clocks before this are "unset" (factory default 2000-01-01 and the like).
PLAUSIBLE_EARLIEST: Final = datetime(2010, 1, 1, tzinfo=UTC)
# A device time further ahead of the hub than this is implausible.
FUTURE_TOLERANCE: Final = timedelta(minutes=5)

_BOOT_ID_PATH: Final = Path("/proc/sys/kernel/random/boot_id")
# systemd-timesyncd touches this file once the clock is synchronised (since systemd 239).
SYSTEMD_SYNC_FLAG: Final = Path("/run/systemd/timesync/synchronized")
_STA_UNSYNC: Final = 0x0040  # adjtimex(2): clock not synchronised
_TIME_ERROR: Final = 5  # adjtimex(2) return value: clock not synchronised
UNKNOWN_BOOT_ID: Final = "unknown"
RESTAMPED_FLAG: Final = "restamped"
OTHER_BOOT_FLAG: Final = "hub_clock_unsynced_other_boot"


class TimeSource(StrEnum):
    """How a reading's effective time was derived."""

    DEVICE = "device"  # the device's timestamp as sent
    DEVICE_CORRECTED = "device_corrected"  # device timestamp minus its measured offset
    HUB_RECEIPT = "hub_receipt"  # the hub's UTC time when the reading arrived


@dataclass(frozen=True, slots=True)
class HubTime:
    """A moment on the hub, as every clock the hub has sees it."""

    utc: datetime
    monotonic_ns: int
    boot_id: str
    clock_synced: bool


class Clock(Protocol):
    """The seam for time: production reads the kernel, tests inject their own."""

    def now(self) -> HubTime:
        """The current hub time."""
        ...


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h>: `modes` (0 = read only), four longs, then `status`.
    # The tail is oversized on purpose so the kernel never writes past our buffer.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("_offset_freq_maxerror_esterror", ctypes.c_long * 4),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_long * 40),
    ]


def read_boot_id() -> str:
    """The kernel's boot id (changes every boot), or "unknown" where there is none."""
    try:
        return _BOOT_ID_PATH.read_text(encoding="ascii").strip()
    except OSError:
        return UNKNOWN_BOOT_ID


@functools.cache
def _libc() -> ctypes.CDLL | None:
    # The process's own symbols (dlopen(NULL)) include the libc Python is linked with.
    # ctypes.util.find_library would fork `ldconfig -p` to find a library already loaded.
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def is_kernel_clock_synced() -> bool:
    """Whether the kernel says the clock is NTP-synchronised (adjtimex, read only)."""
    libc = _libc()
    if libc is None:
        return False
    timex = _Timex()
    state = libc.adjtimex(ctypes.byref(timex))
    if state < 0:
        return False
    return state != _TIME_ERROR and not timex.status & _STA_UNSYNC


def is_clock_synced(sync_flag_path: Path = SYSTEMD_SYNC_FLAG) -> bool:
    """Whether the hub clock has been synchronised this boot.

    Either the kernel says so, or systemd-timesyncd has created its flag file (it does
    so on first sync; /run is emptied at every boot, so the file never outlives one).
    """
    return is_kernel_clock_synced() or sync_flag_path.exists()


class SystemClock:
    """The real hub clock. The sync state is re-read at most every ``sync_check_s``."""

    def __init__(
        self, sync_check_s: float = 10.0, sync_flag_path: Path = SYSTEMD_SYNC_FLAG
    ) -> None:
        """Read the boot id once; it cannot change while we run."""
        self._boot_id = read_boot_id()
        self._sync_check_ns = int(sync_check_s * 1e9)
        self._sync_flag_path = sync_flag_path
        self._synced = False
        self._checked_at_ns: int | None = None

    def now(self) -> HubTime:
        """The current hub time."""
        mono = time.monotonic_ns()
        if self._checked_at_ns is None or mono - self._checked_at_ns >= self._sync_check_ns:
            self._synced = is_clock_synced(self._sync_flag_path)
            self._checked_at_ns = mono
        return HubTime(
            utc=datetime.now(UTC),
            monotonic_ns=mono,
            boot_id=self._boot_id,
            clock_synced=self._synced,
        )


def derive_effective_time(
    *,
    received: HubTime,
    device_time: datetime | None,
    device_clock_offset_s: float | None,
    device_clock_unset: bool,
    timezone_name: str,
) -> tuple[datetime, TimeSource, tuple[str, ...]]:
    """Choose the effective measurement time and say how it was derived.

    Rules, in order:
    - no device time: the hub's receipt time;
    - device says its clock is unset, or the time is before 2010: flag
      ``device_clock_unset`` and use the receipt time;
    - a measured device-vs-hub offset: device time minus the offset (corrected);
    - the (corrected) device time ahead of a synced hub by more than 5 minutes: flag
      ``device_time_future`` and use the receipt time (a stale offset cannot put a
      reading in the future);
    - otherwise the device time, as sent or corrected.
    Naive device times are read in the hub's configured zone; a wall time that is
    ambiguous or non-existent across a DST change is flagged, never guessed silently.
    """
    flags: list[str] = []
    if not received.clock_synced:
        flags.append("hub_clock_unsynced")
    if device_time is None:
        return received.utc, TimeSource.HUB_RECEIPT, tuple(flags)
    device_utc, zone_flags = to_utc(device_time, timezone_name)
    flags.extend(zone_flags)
    if device_clock_unset or device_utc < PLAUSIBLE_EARLIEST:
        flags.append("device_clock_unset")
        return received.utc, TimeSource.HUB_RECEIPT, tuple(flags)
    source = TimeSource.DEVICE
    if device_clock_offset_s is not None:
        device_utc -= timedelta(seconds=device_clock_offset_s)
        source = TimeSource.DEVICE_CORRECTED
    if received.clock_synced and device_utc - received.utc > FUTURE_TOLERANCE:
        flags.append("device_time_future")
        return received.utc, TimeSource.HUB_RECEIPT, tuple(flags)
    return device_utc, source, tuple(flags)


def hub_wall_time(hub: HubTime, timezone_name: str) -> datetime:
    """The hub's time as a device in the patient's zone shows it: local, naive."""
    return hub.utc.astimezone(ZoneInfo(timezone_name)).replace(tzinfo=None)


def device_clock_offset_s(device_wall: datetime, hub: HubTime, timezone_name: str) -> float | None:
    """Device wall clock minus the hub's, in seconds; None for a clock never set (< 2010).

    Device clocks are local wall time with no zone, so the two are compared as the
    patient's zone shows them (a DST change moves both alike).
    """
    if device_wall < PLAUSIBLE_EARLIEST.replace(tzinfo=None):
        return None
    return (device_wall - hub_wall_time(hub, timezone_name)).total_seconds()


def to_utc(wall: datetime, timezone_name: str) -> tuple[datetime, tuple[str, ...]]:
    """Interpret a device wall-clock time in ``timezone_name``; flag DST ambiguity."""
    if wall.tzinfo is not None:
        return wall.astimezone(UTC), ()
    zone = ZoneInfo(timezone_name)
    first = wall.replace(tzinfo=zone, fold=0)
    second = wall.replace(tzinfo=zone, fold=1)
    flags: tuple[str, ...] = ()
    if first.utcoffset() != second.utcoffset():
        # Same wall time twice (fall back) or never (spring forward): cannot be sure.
        round_trip = first.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
        flags = ("dst_ambiguous",) if round_trip == wall else ("dst_nonexistent",)
    return first.astimezone(UTC), flags


@dataclass(frozen=True, slots=True)
class PublishedTime:
    """A reading's times as published: possibly re-stamped after the hub clock synced."""

    effective: datetime
    time_source: TimeSource
    receipt: datetime
    flags: tuple[str, ...]


def restamp(
    *,
    received: HubTime,
    effective_time: datetime,
    time_source: TimeSource,
    time_flags: tuple[str, ...],
    now: HubTime,
) -> PublishedTime:
    """Repair times captured before the hub clock synced, once it has (same boot only).

    The hub's monotonic clock runs unchanged across an NTP step, so the true receipt
    time is ``now.utc - (now.monotonic_ns - received.monotonic_ns)``. It replaces
    HUB_RECEIPT effective times, and shifts DEVICE_CORRECTED ones by the same amount
    (their offset was measured against the unsynced hub clock). A DEVICE time, as the
    device sent it, is never shifted; but a device time now seen to be more than 5
    minutes in the future is replaced by the receipt time, flagged
    ``device_time_future``, as at capture. Another boot's monotonic time means nothing
    now, so such readings are flagged ``hub_clock_unsynced_other_boot`` and left alone
    (as is a monotonic time from "later" than now, which only corrupt data can give).
    """
    unchanged = PublishedTime(effective_time, time_source, received.utc, time_flags)
    if received.clock_synced or not now.clock_synced:
        return unchanged
    elapsed_ns = now.monotonic_ns - received.monotonic_ns
    if received.boot_id != now.boot_id or received.boot_id == UNKNOWN_BOOT_ID or elapsed_ns < 0:
        return PublishedTime(
            effective_time, time_source, received.utc, (*time_flags, OTHER_BOOT_FLAG)
        )
    receipt = now.utc - timedelta(microseconds=elapsed_ns // 1000)
    flags = (*time_flags, RESTAMPED_FLAG)
    if time_source is TimeSource.HUB_RECEIPT:
        return PublishedTime(receipt, time_source, receipt, flags)
    if time_source is TimeSource.DEVICE_CORRECTED:
        effective_time += receipt - received.utc
    if effective_time - receipt > FUTURE_TOLERANCE:
        # Could not be judged while the hub clock was wrong; now it can.
        return PublishedTime(
            receipt, TimeSource.HUB_RECEIPT, receipt, (*flags, "device_time_future")
        )
    return PublishedTime(effective_time, time_source, receipt, flags)
