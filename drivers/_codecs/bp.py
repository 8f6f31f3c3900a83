"""Blood Pressure Service (0x1810): Measurement 0x2A35, Intermediate Cuff 0x2A36, Feature 0x2A49.

Spec: ble-profiles.md §3. The unit flag applies to systolic, diastolic and MAP (and the
cuff pressure); pulse rate is always beats/min. Values stay in the unit sent: kPa is
converted to mmHg only at presentation (§3.4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from drivers._codecs._wire import Reader, flag_names

if TYPE_CHECKING:
    from drivers._codecs.ieee11073 import DateTimeFields, MedFloat

PressureUnit = Literal["mmHg", "kPa"]

MEASUREMENT_STATUS_BITS: Final[dict[int, str]] = {
    0: "body_movement",
    1: "cuff_too_loose",
    2: "irregular_pulse",
    5: "improper_measurement_position",
}
PULSE_RATE_RANGES: Final[tuple[str, ...]] = ("within", "above_upper", "below_lower", "reserved")
FEATURE_BITS: Final[dict[int, str]] = {
    0: "body_movement_detection",
    1: "cuff_fit_detection",
    2: "irregular_pulse_detection",
    3: "pulse_rate_range_detection",
    4: "measurement_position_detection",
    5: "multiple_bond",
    6: "e2e_crc",
    7: "user_data_service",
    8: "user_facing_time",
}


@dataclass(frozen=True, slots=True)
class BloodPressureMeasurement:
    """A decoded Blood Pressure Measurement (0x2A35). Absent optional fields are None.

    ``status`` lists the set status bits by name; ``pulse_rate_range`` is the 2-bit
    pulse-rate range field ("within", "above_upper", "below_lower", "reserved").
    """

    systolic: MedFloat
    diastolic: MedFloat
    mean_arterial_pressure: MedFloat
    unit: PressureUnit
    timestamp: DateTimeFields | None = None
    pulse_rate: MedFloat | None = None
    user_id: int | None = None
    status: tuple[str, ...] | None = None
    pulse_rate_range: str | None = None
    trailing: bytes = b""


@dataclass(frozen=True, slots=True)
class IntermediateCuffPressure:
    """A decoded Intermediate Cuff Pressure (0x2A36): progress during inflation only."""

    cuff_pressure: MedFloat
    unit: PressureUnit
    timestamp: DateTimeFields | None = None
    pulse_rate: MedFloat | None = None
    user_id: int | None = None
    status: tuple[str, ...] | None = None
    pulse_rate_range: str | None = None
    trailing: bytes = b""


@dataclass(frozen=True, slots=True)
class BloodPressureFeature:
    """Decoded Blood Pressure Feature (0x2A49): the supported feature names."""

    features: tuple[str, ...]


def _read_tail(reader: Reader, flags: int) -> dict[str, Any]:
    """The unit and optional fields common to 0x2A35 and 0x2A36, in table order."""
    tail: dict[str, Any] = {"unit": "kPa" if flags & 0x01 else "mmHg"}
    tail["timestamp"] = reader.date_time("timestamp") if flags & 0x02 else None
    tail["pulse_rate"] = reader.sfloat("pulse_rate") if flags & 0x04 else None
    tail["user_id"] = reader.uint(1, "user_id") if flags & 0x08 else None
    if flags & 0x10:
        raw = reader.uint(2, "measurement_status")
        tail["status"] = flag_names(raw, MEASUREMENT_STATUS_BITS)
        tail["pulse_rate_range"] = PULSE_RATE_RANGES[raw >> 3 & 0b11]
    tail["trailing"] = reader.rest()
    return tail


def decode_bp_measurement(data: bytes) -> BloodPressureMeasurement:
    """Decode a Blood Pressure Measurement (§3.1)."""
    reader = Reader(data, "bp_measurement")
    flags = reader.uint(1, "flags")
    systolic = reader.sfloat("systolic")
    diastolic = reader.sfloat("diastolic")
    mean = reader.sfloat("mean_arterial_pressure")
    return BloodPressureMeasurement(systolic, diastolic, mean, **_read_tail(reader, flags))


def decode_intermediate_cuff_pressure(data: bytes) -> IntermediateCuffPressure:
    """Decode an Intermediate Cuff Pressure (§3.2); the diastolic/MAP slots are ignored."""
    reader = Reader(data, "intermediate_cuff_pressure")
    flags = reader.uint(1, "flags")
    cuff = reader.sfloat("cuff_pressure")
    # Spec fills these with NaN, Nordic's test data with 0x0000: whatever they hold, skip.
    reader.take(4, "unused")
    return IntermediateCuffPressure(cuff_pressure=cuff, **_read_tail(reader, flags))


def decode_bp_feature(data: bytes) -> BloodPressureFeature:
    """Decode Blood Pressure Feature (§3.3): exactly 2 bytes."""
    reader = Reader(data, "bp_feature")
    raw = reader.uint(2, "features")
    reader.expect_end()
    return BloodPressureFeature(features=flag_names(raw, FEATURE_BITS))
