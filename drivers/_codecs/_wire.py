"""A bounds-checked little-endian reader shared by the GATT decoders.

It turns every short read into a ``DecodeError`` naming the field, the bytes needed and
the bytes left, so no IndexError or struct.error can escape a codec.
"""

from __future__ import annotations

from agent.errors import DecodeError
from drivers._codecs.ieee11073 import (
    DATE_TIME_SIZE,
    DateTimeFields,
    MedFloat,
    date_time_from_bytes,
    float_from_raw,
    sfloat_from_raw,
)


class Reader:
    """Reads fields in order from one characteristic value."""

    def __init__(self, data: bytes, characteristic: str) -> None:
        """Wrap ``data``; ``characteristic`` prefixes every error's field name."""
        self._data = bytes(data)
        self._pos = 0
        self._name = characteristic

    def take(self, size: int, field: str) -> bytes:
        """The next ``size`` bytes, or DecodeError if the packet ends first."""
        end = self._pos + size
        if end > len(self._data):
            raise DecodeError(
                f"{self._name}.{field}",
                f"expected {size} byte(s) at offset {self._pos}, "
                f"got {len(self._data) - self._pos} (packet is {len(self._data)} bytes)",
            )
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def uint(self, size: int, field: str) -> int:
        """An unsigned little-endian integer of ``size`` bytes."""
        return int.from_bytes(self.take(size, field), "little")

    def sint(self, size: int, field: str) -> int:
        """A signed little-endian integer of ``size`` bytes."""
        return int.from_bytes(self.take(size, field), "little", signed=True)

    def sfloat(self, field: str) -> MedFloat:
        """An IEEE-11073 SFLOAT."""
        return sfloat_from_raw(self.uint(2, field))

    def float32(self, field: str) -> MedFloat:
        """An IEEE-11073 FLOAT."""
        return float_from_raw(self.uint(4, field))

    def date_time(self, field: str) -> DateTimeFields:
        """A 7-byte Date Time."""
        return date_time_from_bytes(self.take(DATE_TIME_SIZE, field))

    def remaining(self) -> int:
        """How many bytes are left."""
        return len(self._data) - self._pos

    def rest(self) -> bytes:
        """Every byte not read yet (trailing bytes a variable-length value may carry)."""
        chunk = self._data[self._pos :]
        self._pos = len(self._data)
        return chunk

    def expect_end(self) -> None:
        """For fixed-size values: DecodeError if any byte is left over."""
        if self._pos != len(self._data):
            raise DecodeError(
                f"{self._name}.length",
                f"expected {self._pos} bytes, got {len(self._data)}",
            )


def flag_names(bits: int, names: dict[int, str]) -> tuple[str, ...]:
    """The names of the set bits, in bit order; RFU bits (absent from ``names``) ignored."""
    return tuple(name for bit, name in sorted(names.items()) if bits >> bit & 1)


def names_to_bits(names: tuple[str, ...], table: dict[int, str]) -> int:
    """The inverse of ``flag_names`` (for encoders); unknown names raise ValueError."""
    reverse = {name: bit for bit, name in table.items()}
    bits = 0
    for name in names:
        if name not in reverse:
            raise ValueError(f"unknown flag name {name!r}")
        bits |= 1 << reverse[name]
    return bits
