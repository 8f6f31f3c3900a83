"""IEEE 11073-20601 number formats (SFLOAT, FLOAT) and the GATT Date Time structure.

Spec: ble-profiles.md §1. Values are kept decimal-exact: a ``MedFloat`` holds a
``Decimal`` built from the wire mantissa and exponent, so 0xF16E reads as exactly 36.6
(never 36.600000000000001) and the device's declared precision survives (36.60 keeps
two decimals). NaN, NRes, +/-INF and the reserved pattern are special values, never
numbers. Only the exponent-0 bit patterns are special, by the letter of the definition;
0xF7FF is therefore 204.7 (§12.18).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Final

from agent.errors import DecodeError


class Special(StrEnum):
    """IEEE-11073 special values. The strings match ``Quantity.special``."""

    NAN = "nan"
    NRES = "nres"
    POS_INF = "+inf"
    NEG_INF = "-inf"
    RESERVED = "reserved"


_SFLOAT_SPECIAL: Final[dict[int, Special]] = {
    0x07FF: Special.NAN,
    0x0800: Special.NRES,
    0x07FE: Special.POS_INF,
    0x0802: Special.NEG_INF,
    0x0801: Special.RESERVED,
}
_FLOAT_SPECIAL: Final[dict[int, Special]] = {
    0x007FFFFF: Special.NAN,
    0x00800000: Special.NRES,
    0x007FFFFE: Special.POS_INF,
    0x00800002: Special.NEG_INF,
    0x00800001: Special.RESERVED,
}
SFLOAT_SPECIAL_RAW: Final[dict[Special, int]] = {v: k for k, v in _SFLOAT_SPECIAL.items()}
FLOAT_SPECIAL_RAW: Final[dict[Special, int]] = {v: k for k, v in _FLOAT_SPECIAL.items()}


@dataclass(frozen=True, slots=True)
class MedFloat:
    """An IEEE-11073 number: an exact ``Decimal`` or a special value, never both.

    Attributes:
        value: The number as sent (mantissa x 10^exponent), None when special.
        special: Which special value was sent, None for an ordinary number.
    """

    value: Decimal | None
    special: Special | None = None

    @classmethod
    def of(cls, text: str | int) -> MedFloat:
        """An ordinary number, e.g. ``MedFloat.of("36.6")`` (handy in tests)."""
        return cls(Decimal(text))

    @classmethod
    def special_value(cls, special: Special) -> MedFloat:
        """A special value (NaN, NRes, +/-INF, reserved)."""
        return cls(None, special)

    def as_float(self) -> float | None:
        """The value as the nearest float (None when special); exact decimals stay exact."""
        return None if self.value is None else float(self.value)

    def scaled(self, factor: int) -> MedFloat:
        """The value multiplied exactly by a power of ten or other integer (specials kept)."""
        if self.value is None:
            return self
        return MedFloat(self.value * factor)


def _signed(raw: int, bits: int) -> int:
    return raw - (1 << bits) if raw & (1 << (bits - 1)) else raw


def sfloat_from_raw(raw: int) -> MedFloat:
    """Decode a 16-bit SFLOAT given as an unsigned integer (§1.1)."""
    special = _SFLOAT_SPECIAL.get(raw)
    if special is not None:
        return MedFloat(None, special)
    mantissa = _signed(raw & 0x0FFF, 12)
    exponent = _signed(raw >> 12, 4)
    return MedFloat(Decimal(mantissa).scaleb(exponent))


def float_from_raw(raw: int) -> MedFloat:
    """Decode a 32-bit FLOAT given as an unsigned integer (§1.2)."""
    special = _FLOAT_SPECIAL.get(raw)
    if special is not None:
        return MedFloat(None, special)
    mantissa = _signed(raw & 0x00FFFFFF, 24)
    exponent = _signed(raw >> 24, 8)
    return MedFloat(Decimal(mantissa).scaleb(exponent))


def decode_sfloat(data: bytes) -> MedFloat:
    """Decode exactly two little-endian bytes as an SFLOAT."""
    if len(data) != 2:  # noqa: PLR2004 - the SFLOAT size
        raise DecodeError("sfloat", f"expected 2 bytes, got {len(data)}")
    return sfloat_from_raw(int.from_bytes(data, "little"))


def decode_float(data: bytes) -> MedFloat:
    """Decode exactly four little-endian bytes as a FLOAT."""
    if len(data) != 4:  # noqa: PLR2004 - the FLOAT size
        raise DecodeError("float", f"expected 4 bytes, got {len(data)}")
    return float_from_raw(int.from_bytes(data, "little"))


def _mantissa_exponent(value: Decimal, mantissa_bits: int, exponent_bits: int) -> tuple[int, int]:
    """A (mantissa, exponent) pair equal to ``value``, keeping its own exponent if it fits."""
    limit = (1 << (mantissa_bits - 1)) - 3  # the top patterns are reserved for specials
    exp_min, exp_max = -(1 << (exponent_bits - 1)), (1 << (exponent_bits - 1)) - 1
    sign, digits, raw_exponent = value.as_tuple()
    if not isinstance(raw_exponent, int):
        raise TypeError(f"{value} is not a finite number; use a special value")
    exponent: int = raw_exponent
    mantissa = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
    # Drop trailing zeros while the mantissa is too large or the exponent too small.
    while (abs(mantissa) > limit or exponent < exp_min) and mantissa % 10 == 0 and mantissa:
        mantissa, exponent = mantissa // 10, exponent + 1
    while exponent > exp_max and abs(mantissa) * 10 <= limit:
        mantissa, exponent = mantissa * 10, exponent - 1
    if mantissa == 0:
        exponent = max(min(exponent, exp_max), exp_min)
    if abs(mantissa) > limit or not exp_min <= exponent <= exp_max:
        raise ValueError(f"{value} cannot be represented exactly in this IEEE-11073 format")
    return mantissa, exponent


def sfloat_to_raw(number: MedFloat) -> int:
    """Encode a MedFloat as a 16-bit SFLOAT integer; raises ValueError if not exact."""
    if number.special is not None:
        return SFLOAT_SPECIAL_RAW[number.special]
    if number.value is None:
        raise ValueError("a MedFloat without value must carry a special")
    mantissa, exponent = _mantissa_exponent(number.value, 12, 4)
    return ((exponent & 0xF) << 12) | (mantissa & 0x0FFF)


def float_to_raw(number: MedFloat) -> int:
    """Encode a MedFloat as a 32-bit FLOAT integer; raises ValueError if not exact."""
    if number.special is not None:
        return FLOAT_SPECIAL_RAW[number.special]
    if number.value is None:
        raise ValueError("a MedFloat without value must carry a special")
    mantissa, exponent = _mantissa_exponent(number.value, 24, 8)
    return ((exponent & 0xFF) << 24) | (mantissa & 0x00FFFFFF)


def encode_sfloat(number: MedFloat) -> bytes:
    """Two little-endian bytes for an SFLOAT."""
    return sfloat_to_raw(number).to_bytes(2, "little")


def encode_float(number: MedFloat) -> bytes:
    """Four little-endian bytes for a FLOAT."""
    return float_to_raw(number).to_bytes(4, "little")


@dataclass(frozen=True, slots=True)
class DateTimeFields:
    """The GATT Date Time structure as sent (0x2A08, §1.3): raw fields, device-local.

    Year, month and day 0 mean "not known". The fields are kept even when they do not
    form a real date; ``to_datetime`` gives a datetime only when they do.
    """

    year: int
    month: int
    day: int
    hours: int
    minutes: int
    seconds: int

    @classmethod
    def from_datetime(cls, moment: datetime) -> DateTimeFields:
        """The fields of a (naive, device-local) datetime; sub-seconds are dropped."""
        return cls(moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)

    def is_known(self) -> bool:
        """Whether year, month and day are all set (non-zero)."""
        return self.year != 0 and self.month != 0 and self.day != 0

    def to_datetime(self) -> datetime | None:
        """A naive datetime, or None when the date is unknown or not a real calendar date."""
        if not self.is_known() or not 1582 <= self.year <= 9999:  # noqa: PLR2004 - §1.3 range
            return None
        try:
            return datetime(self.year, self.month, self.day, self.hours, self.minutes, self.seconds)  # noqa: DTZ001 - device-local wall time, zone unknown by design
        except ValueError:
            return None

    def encode(self) -> bytes:
        """The 7 wire bytes."""
        return self.year.to_bytes(2, "little") + bytes(
            (self.month, self.day, self.hours, self.minutes, self.seconds)
        )


DATE_TIME_SIZE: Final = 7


def date_time_from_bytes(data: bytes) -> DateTimeFields:
    """Decode 7 bytes of Date Time (no length check beyond 7; callers slice)."""
    return DateTimeFields(
        int.from_bytes(data[0:2], "little"), data[2], data[3], data[4], data[5], data[6]
    )
