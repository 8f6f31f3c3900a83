"""PLX, Blood Pressure, Thermometer, Heart Rate and Weight decoders, against vectors built
by hand from the byte layouts in ble-profiles.md §2-§6. Whole decoded objects are compared.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from agent.errors import DecodeError
from drivers._codecs.bp import (
    BloodPressureFeature,
    BloodPressureMeasurement,
    IntermediateCuffPressure,
    decode_bp_feature,
    decode_bp_measurement,
    decode_intermediate_cuff_pressure,
)
from drivers._codecs.hrs import HeartRateMeasurement, decode_heart_rate_measurement
from drivers._codecs.hts import (
    TemperatureMeasurement,
    TemperatureType,
    decode_intermediate_temperature,
    decode_temperature_measurement,
    decode_temperature_type,
)
from drivers._codecs.ieee11073 import DateTimeFields, MedFloat, Special
from drivers._codecs.plx import (
    PlxContinuous,
    PlxFeatures,
    PlxSpotCheck,
    decode_plx_continuous,
    decode_plx_features,
    decode_plx_spot_check,
)
from drivers._codecs.wss import (
    WeightMeasurement,
    WeightScaleFeature,
    decode_weight_measurement,
    decode_weight_scale_feature,
)

NAN = MedFloat(None, Special.NAN)
TS_HEX = "ea070b1b0a0f1e"  # 2026-11-27 10:15:30
TS = DateTimeFields(2026, 11, 27, 10, 15, 30)


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# ---- Pulse oximeter -------------------------------------------------------------------


def test_plx_spot_check_with_every_field() -> None:
    wire = h(f"0f 6100 4800 {TS_HEX} 8002 200000 19f0")
    assert len(wire) == 19
    assert decode_plx_spot_check(wire) == PlxSpotCheck(
        spo2=MedFloat.of(97),
        pulse_rate=MedFloat.of(72),
        timestamp=TS,
        measurement_status=("validated_data", "data_from_measurement_storage"),
        device_sensor_status=("low_perfusion_detected",),
        pai=MedFloat.of("2.5"),
    )


def test_plx_spot_check_minimal_rfu_bits_ignored_and_trailing_kept() -> None:
    assert decode_plx_spot_check(h("e0 6100 4800 aa")) == PlxSpotCheck(
        spo2=MedFloat.of(97), pulse_rate=MedFloat.of(72), trailing=b"\xaa"
    )


def test_plx_spot_check_clock_not_set_keeps_the_raw_timestamp() -> None:
    decoded = decode_plx_spot_check(h(f"11 ff07 0008 {TS_HEX}"))
    assert decoded == PlxSpotCheck(
        spo2=NAN,
        pulse_rate=MedFloat(None, Special.NRES),
        timestamp=TS,
        device_clock_not_set=True,
    )


@pytest.mark.parametrize(
    ("wire", "field"),
    [
        ("", "plx_spot_check.flags"),
        ("00 61", "plx_spot_check.spo2"),
        ("01 6100 4800 ea07 0b", "plx_spot_check.timestamp"),
        ("02 6100 4800 80", "plx_spot_check.measurement_status"),
        ("04 6100 4800 2000", "plx_spot_check.device_sensor_status"),
        ("08 6100 4800", "plx_spot_check.pai"),
    ],
)
def test_plx_spot_check_flag_announcing_a_missing_field(wire: str, field: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_plx_spot_check(h(wire))
    assert caught.value.field == field
    assert "expected" in str(caught.value)
    assert "got" in str(caught.value)


def test_plx_continuous_full_20_bytes() -> None:
    wire = h("1f 6200 4600 6100 4700 6000 4500 0001 000000 0cf0")
    assert len(wire) == 20
    assert decode_plx_continuous(wire) == PlxContinuous(
        spo2=MedFloat.of(98),
        pulse_rate=MedFloat.of(70),
        spo2_fast=MedFloat.of(97),
        pulse_rate_fast=MedFloat.of(71),
        spo2_slow=MedFloat.of(96),
        pulse_rate_slow=MedFloat.of(69),
        measurement_status=("fully_qualified_data",),
        device_sensor_status=(),
        pai=MedFloat.of("1.2"),
    )


def test_plx_continuous_minimal_and_truncated() -> None:
    assert decode_plx_continuous(h("00 6200 4600")) == PlxContinuous(
        spo2=MedFloat.of(98), pulse_rate=MedFloat.of(70)
    )
    with pytest.raises(DecodeError, match=r"plx_continuous.pulse_rate_slow"):
        decode_plx_continuous(h("02 6200 4600 6000"))


def test_plx_features_with_both_support_fields() -> None:
    assert decode_plx_features(h("0300 a000 200000")) == PlxFeatures(
        supported_features=("measurement_status_support", "device_sensor_status_support"),
        measurement_status_support=("measurement_ongoing", "validated_data"),
        device_sensor_status_support=("low_perfusion_detected",),
    )
    assert decode_plx_features(h("4c00")) == PlxFeatures(
        supported_features=(
            "spot_check_measurement_storage",
            "spot_check_timestamp",
            "pulse_amplitude_index",
        )
    )


def test_plx_features_bit0_without_its_field_is_truncated() -> None:
    # bluetooth-sig-python reads only 2 bytes here (§12.3); the spec requires 2 more.
    with pytest.raises(DecodeError, match=r"plx_features.measurement_status"):
        decode_plx_features(h("0100"))
    with pytest.raises(DecodeError, match=r"plx_features.length: expected 2 bytes, got 3"):
        decode_plx_features(h("0000 00"))


# ---- Blood pressure -------------------------------------------------------------------


def test_bp_measurement_mmhg_with_every_field() -> None:
    wire = h("1e 7800 5000 5d00 ea070b1b080000 4100 01 0d00")
    assert len(wire) == 19
    assert decode_bp_measurement(wire) == BloodPressureMeasurement(
        systolic=MedFloat.of(120),
        diastolic=MedFloat.of(80),
        mean_arterial_pressure=MedFloat.of(93),
        unit="mmHg",
        timestamp=DateTimeFields(2026, 11, 27, 8, 0, 0),
        pulse_rate=MedFloat.of(65),
        user_id=1,
        status=("body_movement", "irregular_pulse"),
        pulse_rate_range="above_upper",
    )


def test_bp_measurement_kpa_and_nan() -> None:
    assert decode_bp_measurement(h("01 a0f0 ff07 7cf0")) == BloodPressureMeasurement(
        systolic=MedFloat.of("16.0"),
        diastolic=NAN,
        mean_arterial_pressure=MedFloat.of("12.4"),
        unit="kPa",
    )


def test_bp_measurement_status_reserved_pulse_range() -> None:
    decoded = decode_bp_measurement(h("10 7800 5000 5d00 1800"))
    assert decoded.status == ()
    assert decoded.pulse_rate_range == "reserved"


@pytest.mark.parametrize(
    ("wire", "field"),
    [
        ("00 7800 5000 5d", "bp_measurement.mean_arterial_pressure"),
        ("02 7800 5000 5d00 ea070b1b08", "bp_measurement.timestamp"),
        ("04 7800 5000 5d00", "bp_measurement.pulse_rate"),
        ("08 7800 5000 5d00", "bp_measurement.user_id"),
        ("10 7800 5000 5d00 0d", "bp_measurement.measurement_status"),
    ],
)
def test_bp_measurement_missing_flagged_field(wire: str, field: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_bp_measurement(h(wire))
    assert caught.value.field == field


@pytest.mark.parametrize("unused", ["ff07ff07", "00000000"])
def test_intermediate_cuff_pressure_ignores_the_unused_slots(unused: str) -> None:
    # BLS fills diastolic/MAP with NaN; Nordic's test data uses zeros (§12.12).
    assert decode_intermediate_cuff_pressure(h(f"04 9600 {unused} 4100")) == (
        IntermediateCuffPressure(
            cuff_pressure=MedFloat.of(150), unit="mmHg", pulse_rate=MedFloat.of(65)
        )
    )


def test_bp_feature() -> None:
    assert decode_bp_feature(h("0700")) == BloodPressureFeature(
        features=("body_movement_detection", "cuff_fit_detection", "irregular_pulse_detection")
    )
    with pytest.raises(DecodeError, match=r"bp_feature.features"):
        decode_bp_feature(h("07"))


# ---- Thermometer ----------------------------------------------------------------------


def test_temperature_celsius_minimal() -> None:
    assert decode_temperature_measurement(h("00 6d0100ff")) == TemperatureMeasurement(
        temperature=MedFloat.of("36.5"), unit="C"
    )


def test_temperature_fahrenheit_with_timestamp_and_type() -> None:
    assert decode_temperature_measurement(h(f"07 da0300ff {TS_HEX} 02")) == (
        TemperatureMeasurement(
            temperature=MedFloat.of("98.6"),
            unit="F",
            timestamp=TS,
            temperature_type="body",
            temperature_type_code=2,
        )
    )


def test_temperature_special_and_reserved_type() -> None:
    assert decode_intermediate_temperature(h("04 ffff7f00 00")) == TemperatureMeasurement(
        temperature=MedFloat(None, Special.NAN),
        unit="C",
        temperature_type="reserved",
        temperature_type_code=0,
    )


def test_temperature_is_a_float_not_an_sfloat() -> None:
    with pytest.raises(DecodeError, match=r"temperature_measurement\.temperature"):
        decode_temperature_measurement(h("00 6ef1"))
    with pytest.raises(DecodeError, match=r"temperature_measurement\.temperature_type"):
        decode_temperature_measurement(h("04 6d0100ff"))


def test_temperature_type_characteristic() -> None:
    assert decode_temperature_type(h("09")) == TemperatureType("tympanum", 9)
    with pytest.raises(DecodeError, match=r"temperature_type.length"):
        decode_temperature_type(h("0900"))


# ---- Heart rate -----------------------------------------------------------------------


def test_heart_rate_uint8_without_contact_support() -> None:
    assert decode_heart_rate_measurement(h("00 48")) == HeartRateMeasurement(
        heart_rate=72, sensor_contact_supported=False, sensor_contact=None
    )
    # 0b01 in the contact bits also means "not supported" (§5.1).
    assert decode_heart_rate_measurement(h("02 48")).sensor_contact is None


def test_heart_rate_with_contact_and_rr_intervals() -> None:
    decoded = decode_heart_rate_measurement(h("16 48 0004 cd03"))
    assert decoded == HeartRateMeasurement(
        heart_rate=72,
        sensor_contact_supported=True,
        sensor_contact=True,
        rr_intervals_1024=(1024, 973),
        rr_present=True,
    )
    assert decoded.rr_intervals_s == (1.0, 0.9501953125)


def test_heart_rate_uint16_energy_and_no_contact() -> None:
    assert decode_heart_rate_measurement(h("0d 2c01 3412")) == HeartRateMeasurement(
        heart_rate=300,
        sensor_contact_supported=True,
        sensor_contact=False,
        energy_expended=0x1234,
        heart_rate_uint16=True,
    )


def test_heart_rate_longer_than_20_bytes_is_legal() -> None:
    decoded = decode_heart_rate_measurement(h("10 48" + "0004" * 12))
    assert decoded.rr_intervals_1024 == (1024,) * 12


def test_heart_rate_rr_flag_without_values_keeps_the_heart_rate() -> None:
    assert decode_heart_rate_measurement(h("10 48")) == HeartRateMeasurement(
        heart_rate=72, sensor_contact_supported=False, sensor_contact=None, rr_present=True
    )


def test_heart_rate_half_an_rr_interval_is_rejected() -> None:
    with pytest.raises(DecodeError, match=r"rr_interval: expected an even number"):
        decode_heart_rate_measurement(h("10 48 0004 cd"))
    with pytest.raises(DecodeError, match=r"heart_rate_measurement.heart_rate"):
        decode_heart_rate_measurement(h("01 48"))


# ---- Weight ---------------------------------------------------------------------------


def test_weight_si_with_every_field() -> None:
    wire = h(f"0e 1437 {TS_HEX} 03 e700 d206")
    assert len(wire) == 15
    assert decode_weight_measurement(wire) == WeightMeasurement(
        unit="kg",
        weight=Decimal("70.5"),
        timestamp=TS,
        user_id=3,
        bmi=Decimal("23.1"),
        height=Decimal("1.746"),
    )


def test_weight_imperial_uses_fixed_001_lb_steps() -> None:
    assert decode_weight_measurement(h("09 b73c e700 b402")) == WeightMeasurement(
        unit="lb", weight=Decimal("155.43"), bmi=Decimal("23.1"), height=Decimal("69.2")
    )


def test_weight_ffff_is_unsuccessful_not_327_kg() -> None:
    assert decode_weight_measurement(h("04 ffff ff")) == WeightMeasurement(
        unit="kg", weight=None, measurement_unsuccessful=True, user_id=0xFF
    )


def test_weight_vendor_rfu_bits_are_ignored() -> None:
    # Xiaomi sets bits 5 and 7 (§0).
    assert decode_weight_measurement(h("a0 1437")) == WeightMeasurement(
        unit="kg", weight=Decimal("70.5")
    )


def test_weight_truncated_timestamp_rejects_the_packet() -> None:
    # One TS peer keeps the weight here; strict decoding rejects it (§12.11).
    with pytest.raises(DecodeError, match=r"weight_measurement.timestamp"):
        decode_weight_measurement(h("02 1437 ea070b"))
    with pytest.raises(DecodeError, match=r"weight_measurement.height"):
        decode_weight_measurement(h("08 1437 e700"))


def test_weight_scale_feature_resolutions() -> None:
    assert decode_weight_scale_feature(h("a7010000")) == WeightScaleFeature(
        features=("time_stamp", "multiple_users", "bmi"),
        weight_resolution_code=4,
        height_resolution_code=3,
        weight_resolution_kg=Decimal("0.05"),
        weight_resolution_lb=Decimal("0.1"),
        height_resolution_m=Decimal("0.001"),
        height_resolution_in=Decimal("0.1"),
    )
    with pytest.raises(DecodeError, match=r"weight_scale_feature.features"):
        decode_weight_scale_feature(h("a701"))
