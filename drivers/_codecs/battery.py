"""Battery Service (0x180F): Battery Level 0x2A19.

Spec: ble-profiles.md §8.2. Exactly one byte, 0..100 %; 101..255 are reserved and rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from agent.errors import DecodeError
from drivers._codecs._wire import Reader

MAX_PERCENT: Final = 100


@dataclass(frozen=True, slots=True)
class BatteryLevel:
    """Decoded Battery Level."""

    percent: int


def decode_battery_level(data: bytes) -> BatteryLevel:
    """Decode Battery Level (0x2A19)."""
    reader = Reader(data, "battery_level")
    percent = reader.uint(1, "percent")
    reader.expect_end()
    if percent > MAX_PERCENT:
        raise DecodeError("battery_level.percent", f"expected 0..100, got {percent}")
    return BatteryLevel(percent)
