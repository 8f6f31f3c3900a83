"""Glucose Service (0x1808): Measurement 0x2A18, Context 0x2A34, Feature 0x2A51.

Spec: ble-profiles.md §7. Base time and time offset are kept apart (§12.14); the
user-facing time is their sum. Concentration stays in the wire unit (kg/L or mol/L) as an
exact Decimal; ``glucose_mg_dl`` / ``glucose_mmol_l`` scale it exactly (x 100000, x 1000).
The RACP lives in ``drivers._codecs.racp``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final, Literal

from drivers._codecs._wire import Reader, flag_names

if TYPE_CHECKING:
    from drivers._codecs.ieee11073 import DateTimeFields, MedFloat

ConcentrationUnit = Literal["kg/L", "mol/L"]

MG_DL_PER_KG_L: Final = 100_000
MMOL_L_PER_MOL_L: Final = 1_000

SAMPLE_TYPES: Final[dict[int, str]] = {
    1: "capillary_whole_blood",
    2: "capillary_plasma",
    3: "venous_whole_blood",
    4: "venous_plasma",
    5: "arterial_whole_blood",
    6: "arterial_plasma",
    7: "undetermined_whole_blood",
    8: "undetermined_plasma",
    9: "interstitial_fluid",
    10: "control_solution",
}
SAMPLE_LOCATIONS: Final[dict[int, str]] = {
    1: "finger",
    2: "alternate_site_test",
    3: "earlobe",
    4: "control_solution",
    15: "not_available",
}
SENSOR_STATUS_BITS: Final[dict[int, str]] = {
    0: "device_battery_low",
    1: "sensor_malfunction",
    2: "sample_size_insufficient",
    3: "strip_insertion_error",
    4: "strip_type_incorrect",
    5: "result_too_high",
    6: "result_too_low",
    7: "sensor_temperature_too_high",
    8: "sensor_temperature_too_low",
    9: "sensor_read_interrupted",
    10: "general_device_fault",
    11: "time_fault",
}
FEATURE_BITS: Final[dict[int, str]] = {
    0: "low_battery_detection",
    1: "sensor_malfunction_detection",
    2: "sensor_sample_size",
    3: "sensor_strip_insertion_error_detection",
    4: "sensor_strip_type_error_detection",
    5: "sensor_result_high_low_detection",
    6: "sensor_temperature_high_low_detection",
    7: "sensor_read_interrupt_detection",
    8: "general_device_fault",
    9: "time_fault",
    10: "multiple_bond",
}
CARBOHYDRATES: Final[dict[int, str]] = {
    1: "breakfast",
    2: "lunch",
    3: "dinner",
    4: "snack",
    5: "drink",
    6: "supper",
    7: "brunch",
}
MEALS: Final[dict[int, str]] = {
    1: "preprandial",
    2: "postprandial",
    3: "fasting",
    4: "casual",
    5: "bedtime",
}
TESTERS: Final[dict[int, str]] = {
    1: "self",
    2: "health_care_professional",
    3: "lab_test",
    15: "not_available",
}
HEALTH: Final[dict[int, str]] = {
    1: "minor_health_issues",
    2: "major_health_issues",
    3: "during_menses",
    4: "under_stress",
    5: "no_health_issues",
    15: "not_available",
}
MEDICATIONS: Final[dict[int, str]] = {
    1: "rapid_acting_insulin",
    2: "short_acting_insulin",
    3: "intermediate_acting_insulin",
    4: "long_acting_insulin",
    5: "pre_mixed_insulin",
}
EXERCISE_DURATION_OVERRUN: Final = 0xFFFF


def enum_name(table: dict[int, str], code: int) -> str:
    """The name of an enumerated code, or "reserved" for codes the spec leaves RFU."""
    return table.get(code, "reserved")


@dataclass(frozen=True, slots=True)
class GlucoseMeasurement:
    """A decoded Glucose Measurement (0x2A18). Absent optional fields are None.

    ``concentration`` and ``unit`` (kg/L or mol/L), ``type_code`` and
    ``sample_location_code`` are present together (flag bit 1).
    """

    sequence_number: int
    base_time: DateTimeFields
    time_offset_minutes: int | None = None
    concentration: MedFloat | None = None
    unit: ConcentrationUnit | None = None
    type_code: int | None = None
    sample_location_code: int | None = None
    sensor_status: tuple[str, ...] | None = None
    context_follows: bool = False
    trailing: bytes = b""

    @property
    def sample_type(self) -> str | None:
        """The sample type name ("capillary_whole_blood", ...), None when absent."""
        return None if self.type_code is None else enum_name(SAMPLE_TYPES, self.type_code)

    @property
    def sample_location(self) -> str | None:
        """The sample location name ("finger", ...), None when absent."""
        code = self.sample_location_code
        return None if code is None else enum_name(SAMPLE_LOCATIONS, code)

    @property
    def timestamp(self) -> datetime | None:
        """User-facing time: base time + offset; None when the base time is not a date."""
        base = self.base_time.to_datetime()
        if base is None:
            return None
        try:
            return base + timedelta(minutes=self.time_offset_minutes or 0)
        except OverflowError:
            return None

    @property
    def glucose_mg_dl(self) -> MedFloat | None:
        """The concentration in mg/dL (exact), when it was sent in kg/L."""
        if self.concentration is None or self.unit != "kg/L":
            return None
        return self.concentration.scaled(MG_DL_PER_KG_L)

    @property
    def glucose_mmol_l(self) -> MedFloat | None:
        """The concentration in mmol/L (exact), when it was sent in mol/L."""
        if self.concentration is None or self.unit != "mol/L":
            return None
        return self.concentration.scaled(MMOL_L_PER_MOL_L)


@dataclass(frozen=True, slots=True)
class GlucoseContext:
    """A decoded Glucose Measurement Context (0x2A34), joined to 0x2A18 by sequence number.

    Carbohydrate is in grams, medication in mg or mL (``medication_unit``), HbA1c in %
    (§7.2, unverified units noted there). Enumerations keep the raw code; names via
    ``enum_name`` and the tables in this module.
    """

    sequence_number: int
    extended_flags: int | None = None
    carbohydrate_id: int | None = None
    carbohydrate_g: MedFloat | None = None
    meal: int | None = None
    tester: int | None = None
    health: int | None = None
    exercise_duration_s: int | None = None
    exercise_intensity_pct: int | None = None
    medication_id: int | None = None
    medication: MedFloat | None = None
    medication_unit: Literal["mg", "mL"] | None = None
    hba1c_pct: MedFloat | None = None
    trailing: bytes = b""


@dataclass(frozen=True, slots=True)
class GlucoseFeature:
    """Decoded Glucose Feature (0x2A51)."""

    features: tuple[str, ...]


def decode_glucose_measurement(data: bytes) -> GlucoseMeasurement:
    """Decode a Glucose Measurement (§7.1)."""
    reader = Reader(data, "glucose_measurement")
    flags = reader.uint(1, "flags")
    sequence = reader.uint(2, "sequence_number")
    base_time = reader.date_time("base_time")
    offset = reader.sint(2, "time_offset") if flags & 0x01 else None
    concentration = type_code = location = None
    unit: ConcentrationUnit | None = None
    if flags & 0x02:
        concentration = reader.sfloat("glucose_concentration")
        unit = "mol/L" if flags & 0x04 else "kg/L"
        type_location = reader.uint(1, "type_sample_location")
        type_code, location = type_location & 0x0F, type_location >> 4
    status = None
    if flags & 0x08:
        status = flag_names(reader.uint(2, "sensor_status"), SENSOR_STATUS_BITS)
    return GlucoseMeasurement(
        sequence_number=sequence,
        base_time=base_time,
        time_offset_minutes=offset,
        concentration=concentration,
        unit=unit,
        type_code=type_code,
        sample_location_code=location,
        sensor_status=status,
        context_follows=bool(flags & 0x10),
        trailing=reader.rest(),
    )


def decode_glucose_context(data: bytes) -> GlucoseContext:
    """Decode a Glucose Measurement Context (§7.2); extended flags come first (bit 7)."""
    reader = Reader(data, "glucose_context")
    flags = reader.uint(1, "flags")
    fields: dict[str, object] = {"sequence_number": reader.uint(2, "sequence_number")}
    if flags & 0x80:
        fields["extended_flags"] = reader.uint(1, "extended_flags")
    if flags & 0x01:
        fields["carbohydrate_id"] = reader.uint(1, "carbohydrate_id")
        fields["carbohydrate_g"] = reader.sfloat("carbohydrate")
    if flags & 0x02:
        fields["meal"] = reader.uint(1, "meal")
    if flags & 0x04:
        tester_health = reader.uint(1, "tester_health")
        fields["tester"], fields["health"] = tester_health & 0x0F, tester_health >> 4
    if flags & 0x08:
        fields["exercise_duration_s"] = reader.uint(2, "exercise_duration")
        fields["exercise_intensity_pct"] = reader.uint(1, "exercise_intensity")
    if flags & 0x10:
        fields["medication_id"] = reader.uint(1, "medication_id")
        fields["medication"] = reader.sfloat("medication")
        fields["medication_unit"] = "mL" if flags & 0x20 else "mg"
    if flags & 0x40:
        fields["hba1c_pct"] = reader.sfloat("hba1c")
    return GlucoseContext(trailing=reader.rest(), **fields)  # type: ignore[arg-type]


def decode_glucose_feature(data: bytes) -> GlucoseFeature:
    """Decode Glucose Feature (§7.3): exactly 2 bytes."""
    reader = Reader(data, "glucose_feature")
    raw = reader.uint(2, "features")
    reader.expect_end()
    return GlucoseFeature(features=flag_names(raw, FEATURE_BITS))
