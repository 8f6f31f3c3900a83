"""Heart Rate Service (0x180D): Heart Rate Measurement 0x2A37.

Spec: ble-profiles.md §5. RR intervals come in units of 1/1024 s; the count is implicit
(the rest of the packet). Packets longer than 20 bytes are legal with a larger MTU (§12.7).
An RR flag with no RR values is accepted with an empty tuple rather than losing the heart
rate (§12.8); an odd byte left over is a truncated RR value and is rejected.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.errors import DecodeError
from drivers._codecs._wire import Reader

SENSOR_CONTACT_SUPPORTED = 0b10
SENSOR_CONTACT_DETECTED = 0b11


@dataclass(frozen=True, slots=True)
class HeartRateMeasurement:
    """A decoded Heart Rate Measurement (0x2A37).

    ``sensor_contact`` is tri-state: None when the sensor does not support contact
    detection. ``rr_intervals_1024`` holds the raw RR values (1/1024 s); absent RR field
    and "no RR values" both give an empty tuple, ``rr_present`` tells them apart.
    """

    heart_rate: int
    sensor_contact_supported: bool
    sensor_contact: bool | None
    energy_expended: int | None = None
    rr_intervals_1024: tuple[int, ...] = ()
    rr_present: bool = False
    heart_rate_uint16: bool = False
    trailing: bytes = b""

    @property
    def rr_intervals_s(self) -> tuple[float, ...]:
        """RR intervals in seconds (raw / 1024 is exact in binary floating point)."""
        return tuple(raw / 1024 for raw in self.rr_intervals_1024)


def decode_heart_rate_measurement(data: bytes) -> HeartRateMeasurement:
    """Decode a Heart Rate Measurement (§5.1)."""
    reader = Reader(data, "heart_rate_measurement")
    flags = reader.uint(1, "flags")
    wide = bool(flags & 0x01)
    heart_rate = reader.uint(2 if wide else 1, "heart_rate")
    contact_bits = flags >> 1 & 0b11
    supported = contact_bits >= SENSOR_CONTACT_SUPPORTED
    energy = reader.uint(2, "energy_expended") if flags & 0x08 else None
    rr: tuple[int, ...] = ()
    if flags & 0x10:
        if reader.remaining() % 2:
            raise DecodeError(
                "heart_rate_measurement.rr_interval",
                f"expected an even number of RR bytes, got {reader.remaining()}",
            )
        rr = tuple(reader.uint(2, "rr_interval") for _ in range(reader.remaining() // 2))
    return HeartRateMeasurement(
        heart_rate=heart_rate,
        sensor_contact_supported=supported,
        sensor_contact=(contact_bits == SENSOR_CONTACT_DETECTED) if supported else None,
        energy_expended=energy,
        rr_intervals_1024=rr,
        rr_present=bool(flags & 0x10),
        heart_rate_uint16=wide,
        trailing=reader.rest(),
    )
