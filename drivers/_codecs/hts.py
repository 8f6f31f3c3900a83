"""Health Thermometer Service (0x1809): temperature measurement, intermediate and type.

Characteristics: Temperature Measurement 0x2A1C, Intermediate Temperature 0x2A1E,
Temperature Type 0x2A1D.

Spec: ble-profiles.md §4. The temperature is a 32-bit FLOAT (not SFLOAT), in the unit the
flag says; Fahrenheit is kept as sent (conversion happens at presentation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from drivers._codecs._wire import Reader

if TYPE_CHECKING:
    from drivers._codecs.ieee11073 import DateTimeFields, MedFloat

TemperatureUnit = Literal["C", "F"]

TEMPERATURE_TYPES: Final[dict[int, str]] = {
    1: "armpit",
    2: "body",
    3: "ear",
    4: "finger",
    5: "gastrointestinal_tract",
    6: "mouth",
    7: "rectum",
    8: "toe",
    9: "tympanum",
}


def temperature_type_name(code: int) -> str:
    """The site name for a temperature type code; 0 and 10..255 are "reserved"."""
    return TEMPERATURE_TYPES.get(code, "reserved")


@dataclass(frozen=True, slots=True)
class TemperatureMeasurement:
    """A decoded Temperature Measurement (0x2A1C) or Intermediate Temperature (0x2A1E).

    ``temperature`` may be a special value (NaN, NRes, +/-INF); ``temperature_type`` is the
    site name and ``temperature_type_code`` the raw code, both None when absent.
    """

    temperature: MedFloat
    unit: TemperatureUnit
    timestamp: DateTimeFields | None = None
    temperature_type: str | None = None
    temperature_type_code: int | None = None
    trailing: bytes = b""


@dataclass(frozen=True, slots=True)
class TemperatureType:
    """Decoded Temperature Type (0x2A1D): the static measurement site."""

    temperature_type: str
    temperature_type_code: int


def _decode(data: bytes, characteristic: str) -> TemperatureMeasurement:
    reader = Reader(data, characteristic)
    flags = reader.uint(1, "flags")
    temperature = reader.float32("temperature")
    timestamp = reader.date_time("timestamp") if flags & 0x02 else None
    code = reader.uint(1, "temperature_type") if flags & 0x04 else None
    return TemperatureMeasurement(
        temperature=temperature,
        unit="F" if flags & 0x01 else "C",
        timestamp=timestamp,
        temperature_type=None if code is None else temperature_type_name(code),
        temperature_type_code=code,
        trailing=reader.rest(),
    )


def decode_temperature_measurement(data: bytes) -> TemperatureMeasurement:
    """Decode a Temperature Measurement (§4.1)."""
    return _decode(data, "temperature_measurement")


def decode_intermediate_temperature(data: bytes) -> TemperatureMeasurement:
    """Decode an Intermediate Temperature (§4.1, same layout; non-final, never stored)."""
    return _decode(data, "intermediate_temperature")


def decode_temperature_type(data: bytes) -> TemperatureType:
    """Decode Temperature Type (0x2A1D): exactly one byte."""
    reader = Reader(data, "temperature_type")
    code = reader.uint(1, "temperature_type")
    reader.expect_end()
    return TemperatureType(temperature_type_name(code), code)
