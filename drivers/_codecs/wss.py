"""Weight Scale Service (0x181D): Weight Measurement 0x2A9D, Weight Scale Feature 0x2A9E.

Spec: ble-profiles.md §6. The weight unit is fixed by the spec (0.005 kg or 0.01 lb), not
by the Feature resolution (§6.3, §12.4). Raw 0xFFFF is "measurement unsuccessful", never
327.675 kg (§12.5). Values are exact ``Decimal``s.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Final, Literal

from drivers._codecs._wire import Reader, flag_names

if TYPE_CHECKING:
    from drivers._codecs.ieee11073 import DateTimeFields

WeightUnit = Literal["kg", "lb"]

WEIGHT_UNSUCCESSFUL: Final = 0xFFFF
WEIGHT_STEP: Final[dict[str, Decimal]] = {"kg": Decimal("0.005"), "lb": Decimal("0.01")}
HEIGHT_STEP: Final[dict[str, Decimal]] = {"kg": Decimal("0.001"), "lb": Decimal("0.1")}
BMI_STEP: Final = Decimal("0.1")
FEATURE_BITS: Final[dict[int, str]] = {
    0: "time_stamp",
    1: "multiple_users",
    2: "bmi",
}
# Index = resolution code (bits 3-6 / 7-9 of the feature); code 0 = not specified.
WEIGHT_RESOLUTIONS_KG: Final = ("0.5", "0.2", "0.1", "0.05", "0.02", "0.01", "0.005")
WEIGHT_RESOLUTIONS_LB: Final = ("1", "0.5", "0.2", "0.1", "0.05", "0.02", "0.01")
HEIGHT_RESOLUTIONS_M: Final = ("0.01", "0.005", "0.001")
HEIGHT_RESOLUTIONS_IN: Final = ("1", "0.5", "0.1")


@dataclass(frozen=True, slots=True)
class WeightMeasurement:
    """A decoded Weight Measurement (0x2A9D).

    ``unit`` "kg" means weight in kg and height in m; "lb" means lb and inches.
    ``weight`` is None when ``measurement_unsuccessful``. BMI and height come together.
    """

    unit: WeightUnit
    weight: Decimal | None
    measurement_unsuccessful: bool = False
    timestamp: DateTimeFields | None = None
    user_id: int | None = None
    bmi: Decimal | None = None
    height: Decimal | None = None
    trailing: bytes = b""


@dataclass(frozen=True, slots=True)
class WeightScaleFeature:
    """Decoded Weight Scale Feature (0x2A9E). Resolutions are None when not specified."""

    features: tuple[str, ...]
    weight_resolution_code: int
    height_resolution_code: int
    weight_resolution_kg: Decimal | None = None
    weight_resolution_lb: Decimal | None = None
    height_resolution_m: Decimal | None = None
    height_resolution_in: Decimal | None = None


def decode_weight_measurement(data: bytes) -> WeightMeasurement:
    """Decode a Weight Measurement (§6.1)."""
    reader = Reader(data, "weight_measurement")
    flags = reader.uint(1, "flags")
    unit: WeightUnit = "lb" if flags & 0x01 else "kg"
    raw_weight = reader.uint(2, "weight")
    timestamp = reader.date_time("timestamp") if flags & 0x02 else None
    user_id = reader.uint(1, "user_id") if flags & 0x04 else None
    bmi = height = None
    if flags & 0x08:
        bmi = reader.uint(2, "bmi") * BMI_STEP
        height = reader.uint(2, "height") * HEIGHT_STEP[unit]
    unsuccessful = raw_weight == WEIGHT_UNSUCCESSFUL
    return WeightMeasurement(
        unit=unit,
        weight=None if unsuccessful else raw_weight * WEIGHT_STEP[unit],
        measurement_unsuccessful=unsuccessful,
        timestamp=timestamp,
        user_id=user_id,
        bmi=bmi,
        height=height,
        trailing=reader.rest(),
    )


def _resolution(table: tuple[str, ...], code: int) -> Decimal | None:
    return Decimal(table[code - 1]) if 1 <= code <= len(table) else None


def decode_weight_scale_feature(data: bytes) -> WeightScaleFeature:
    """Decode Weight Scale Feature (§6.2): exactly 4 bytes; codes past the tables are None."""
    reader = Reader(data, "weight_scale_feature")
    raw = reader.uint(4, "features")
    reader.expect_end()
    weight_code, height_code = raw >> 3 & 0b1111, raw >> 7 & 0b111
    return WeightScaleFeature(
        features=flag_names(raw, FEATURE_BITS),
        weight_resolution_code=weight_code,
        height_resolution_code=height_code,
        weight_resolution_kg=_resolution(WEIGHT_RESOLUTIONS_KG, weight_code),
        weight_resolution_lb=_resolution(WEIGHT_RESOLUTIONS_LB, weight_code),
        height_resolution_m=_resolution(HEIGHT_RESOLUTIONS_M, height_code),
        height_resolution_in=_resolution(HEIGHT_RESOLUTIONS_IN, height_code),
    )
