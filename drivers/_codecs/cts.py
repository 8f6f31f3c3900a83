"""Time characteristics: Date Time 0x2A08, Current Time 0x2A2B, Local Time Information 0x2A0F.

Spec: ble-profiles.md §1.3 and §8.1. These are fixed-size values: any other length is
rejected. A Date Time that is not a real date is kept as raw fields (``to_datetime`` then
gives None) rather than rejected. Day-of-week RFU values 8..255 are kept as sent (§12.10).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from drivers._codecs._wire import Reader, flag_names, names_to_bits
from drivers._codecs.ieee11073 import DateTimeFields

if TYPE_CHECKING:
    from datetime import datetime

ADJUST_REASON_BITS: Final[dict[int, str]] = {
    0: "manual_time_update",
    1: "external_reference_time_update",
    2: "change_of_time_zone",
    3: "change_of_dst",
}
TIME_ZONE_UNKNOWN: Final = -128
DST_UNKNOWN: Final = 255


@dataclass(frozen=True, slots=True)
class CurrentTime:
    """Decoded Current Time (0x2A2B). ``day_of_week``: 1 Monday .. 7 Sunday, 0 unknown."""

    date_time: DateTimeFields
    day_of_week: int
    fractions256: int
    adjust_reason: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LocalTimeInformation:
    """Decoded Local Time Information (0x2A0F); None where the device says "unknown".

    ``time_zone_quarters`` is the offset from UTC in 15-minute steps; ``dst_offset_code``
    the raw DST code (0 standard, 2 +0.5 h, 4 +1 h, 8 +2 h).
    """

    time_zone_quarters: int | None
    dst_offset_code: int | None


def decode_date_time(data: bytes) -> DateTimeFields:
    """Decode a stand-alone Date Time (0x2A08): exactly 7 bytes."""
    reader = Reader(data, "date_time")
    value = reader.date_time("date_time")
    reader.expect_end()
    return value


def decode_current_time(data: bytes) -> CurrentTime:
    """Decode Current Time (0x2A2B): exactly 10 bytes."""
    reader = Reader(data, "current_time")
    date_time = reader.date_time("date_time")
    day_of_week = reader.uint(1, "day_of_week")
    fractions = reader.uint(1, "fractions256")
    reason = reader.uint(1, "adjust_reason")
    reader.expect_end()
    return CurrentTime(date_time, day_of_week, fractions, flag_names(reason, ADJUST_REASON_BITS))


def encode_current_time(value: CurrentTime) -> bytes:
    """Current Time (0x2A2B) as written to a device to set its clock: 10 bytes."""
    reason = names_to_bits(value.adjust_reason, ADJUST_REASON_BITS)
    tail = bytes((value.day_of_week, value.fractions256, reason))
    return value.date_time.encode() + tail


def current_time_at(wall: datetime, adjust_reason: tuple[str, ...]) -> CurrentTime:
    """The Current Time value for a naive local wall-clock ``wall``."""
    fractions = wall.microsecond * 256 // 1_000_000
    return CurrentTime(
        DateTimeFields.from_datetime(wall), wall.isoweekday(), fractions, adjust_reason
    )


def decode_local_time_information(data: bytes) -> LocalTimeInformation:
    """Decode Local Time Information (0x2A0F): exactly 2 bytes."""
    reader = Reader(data, "local_time_information")
    zone = reader.sint(1, "time_zone")
    dst = reader.uint(1, "dst_offset")
    reader.expect_end()
    return LocalTimeInformation(
        time_zone_quarters=None if zone == TIME_ZONE_UNKNOWN else zone,
        dst_offset_code=None if dst == DST_UNKNOWN else dst,
    )
