"""Raspberry Pi under-voltage and throttling, as the firmware reports them (reliability.md T25).

A weak power supply makes SD-card writes fail and the radio drop out; the hub must say so
before a clinician wonders why readings stopped. The firmware exposes a bit field
(``vcgencmd get_throttled``; on recent kernels also a sysfs file): low bits are "now",
bits 16+ are "has occurred since boot". Pure decoding here; the read is one small file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

SYSFS_THROTTLED: Final = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")

# Bit -> name, from the Raspberry Pi documentation of `vcgencmd get_throttled`.
_NOW_BITS: Final = {
    0: "under_voltage",
    1: "arm_frequency_capped",
    2: "throttled",
    3: "soft_temperature_limit",
}
_OCCURRED_SHIFT: Final = 16


@dataclass(frozen=True, slots=True)
class PowerFlags:
    """What the firmware says now and since boot."""

    now: tuple[str, ...]
    occurred: tuple[str, ...]
    raw: int


def decode_throttled(value: int) -> PowerFlags:
    """Decode the firmware's throttled bit field; unknown bits are ignored, not guessed."""
    now = tuple(name for bit, name in _NOW_BITS.items() if value >> bit & 1)
    occurred = tuple(
        name for bit, name in _NOW_BITS.items() if value >> (bit + _OCCURRED_SHIFT) & 1
    )
    return PowerFlags(now, occurred, value)


def read_power_flags(path: Path = SYSFS_THROTTLED) -> PowerFlags | None:
    """The flags, or None where there is no such firmware file (not a Pi, or an old kernel)."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except OSError:
        return None
    try:
        # The sysfs file holds hex without a prefix ("50005"); vcgencmd prints "0x50005".
        return decode_throttled(int(text.removeprefix("throttled=").removeprefix("0x"), 16))
    except ValueError:
        return None
