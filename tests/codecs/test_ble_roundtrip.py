"""Emulator encoders round-trip through the decoders: decode(encode(x)) == x.

The encoders in drivers/emulators/ble_payloads.py are what the bumble peripherals send,
so a mismatch here would make every emulator-based test lie.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers._codecs import battery, bp, cts, dis, gls, hrs, hts, plx, racp, wss
from drivers._codecs.ieee11073 import DateTimeFields, MedFloat, Special
from drivers._codecs.registry import DECODERS
from drivers.emulators import ble_payloads as enc

if TYPE_CHECKING:
    from collections.abc import Callable

FAST = settings(max_examples=80, deadline=None)
u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
specials = st.sampled_from(list(Special)).map(MedFloat.special_value)


def medfloat(mantissa_max: int, exp_min: int, exp_max: int) -> st.SearchStrategy[MedFloat]:
    numbers = st.builds(
        lambda m, e: MedFloat(Decimal(m).scaleb(e)),
        st.integers(-mantissa_max, mantissa_max),
        st.integers(exp_min, exp_max),
    )
    return st.one_of(numbers, specials)


sfloat = medfloat(2045, -8, 7)
float32 = medfloat(8388605, -128, 127)
date_times = st.builds(DateTimeFields, u16, u8, u8, u8, u8, u8)
trailing = st.binary(max_size=3)


def names(table: dict[int, str]) -> st.SearchStrategy[tuple[str, ...]]:
    return st.sets(st.sampled_from(sorted(table))).map(
        lambda bits: tuple(table[b] for b in sorted(bits))
    )


def optional(strategy: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.none() | strategy


plx_spot = st.builds(
    plx.PlxSpotCheck,
    spo2=sfloat,
    pulse_rate=sfloat,
    timestamp=optional(date_times),
    measurement_status=optional(names(plx.MEASUREMENT_STATUS_BITS)),
    device_sensor_status=optional(names(plx.DEVICE_SENSOR_STATUS_BITS)),
    pai=optional(sfloat),
    device_clock_not_set=st.booleans(),
    trailing=trailing,
)


@st.composite
def plx_continuous(draw: st.DrawFn) -> plx.PlxContinuous:
    fast = draw(st.booleans())
    slow = draw(st.booleans())
    return plx.PlxContinuous(
        spo2=draw(sfloat),
        pulse_rate=draw(sfloat),
        spo2_fast=draw(sfloat) if fast else None,
        pulse_rate_fast=draw(sfloat) if fast else None,
        spo2_slow=draw(sfloat) if slow else None,
        pulse_rate_slow=draw(sfloat) if slow else None,
        measurement_status=draw(optional(names(plx.MEASUREMENT_STATUS_BITS))),  # type: ignore[arg-type]
        device_sensor_status=draw(optional(names(plx.DEVICE_SENSOR_STATUS_BITS))),  # type: ignore[arg-type]
        pai=draw(optional(sfloat)),  # type: ignore[arg-type]
        trailing=draw(trailing),
    )


def bp_fields() -> dict[str, st.SearchStrategy[object]]:
    return {
        "unit": st.sampled_from(["mmHg", "kPa"]),
        "timestamp": optional(date_times),
        "pulse_rate": optional(sfloat),
        "user_id": optional(u8),
        "trailing": trailing,
    }


@st.composite
def bp_status(draw: st.DrawFn) -> tuple[tuple[str, ...] | None, str | None]:
    if not draw(st.booleans()):
        return None, None
    return draw(names(bp.MEASUREMENT_STATUS_BITS)), draw(st.sampled_from(bp.PULSE_RATE_RANGES))


@st.composite
def bp_measurement(draw: st.DrawFn) -> bp.BloodPressureMeasurement:
    status, pulse_range = draw(bp_status())
    return bp.BloodPressureMeasurement(
        systolic=draw(sfloat),
        diastolic=draw(sfloat),
        mean_arterial_pressure=draw(sfloat),
        status=status,
        pulse_rate_range=pulse_range,
        **draw(st.fixed_dictionaries(bp_fields())),  # type: ignore[arg-type]
    )


@st.composite
def cuff_pressure(draw: st.DrawFn) -> bp.IntermediateCuffPressure:
    status, pulse_range = draw(bp_status())
    return bp.IntermediateCuffPressure(
        cuff_pressure=draw(sfloat),
        status=status,
        pulse_rate_range=pulse_range,
        **draw(st.fixed_dictionaries(bp_fields())),  # type: ignore[arg-type]
    )


@st.composite
def temperature(draw: st.DrawFn) -> hts.TemperatureMeasurement:
    code = draw(optional(u8))
    return hts.TemperatureMeasurement(
        temperature=draw(float32),
        unit=draw(st.sampled_from(["C", "F"])),
        timestamp=draw(optional(date_times)),  # type: ignore[arg-type]
        temperature_type=None if code is None else hts.temperature_type_name(code),  # type: ignore[arg-type]
        temperature_type_code=code,  # type: ignore[arg-type]
        trailing=draw(trailing),
    )


@st.composite
def heart_rate(draw: st.DrawFn) -> hrs.HeartRateMeasurement:
    wide = draw(st.booleans())
    supported = draw(st.booleans())
    rr = draw(st.lists(u16, max_size=12).map(tuple))
    rr_present = bool(rr) or draw(st.booleans())
    return hrs.HeartRateMeasurement(
        heart_rate=draw(u16 if wide else u8),
        sensor_contact_supported=supported,
        sensor_contact=draw(st.booleans()) if supported else None,
        energy_expended=draw(optional(u16)),  # type: ignore[arg-type]
        rr_intervals_1024=rr,
        rr_present=rr_present,
        heart_rate_uint16=wide,
        # RR values run to the end of the packet, so nothing can trail them.
        trailing=b"" if rr_present else draw(trailing),
    )


@st.composite
def weight(draw: st.DrawFn) -> wss.WeightMeasurement:
    unit: wss.WeightUnit = "lb" if draw(st.booleans()) else "kg"
    raw = draw(st.integers(0, 0xFFFF))
    with_bmi = draw(st.booleans())
    return wss.WeightMeasurement(
        unit=unit,
        weight=None if raw == 0xFFFF else raw * wss.WEIGHT_STEP[unit],
        measurement_unsuccessful=raw == 0xFFFF,
        timestamp=draw(optional(date_times)),  # type: ignore[arg-type]
        user_id=draw(optional(u8)),  # type: ignore[arg-type]
        bmi=draw(u16) * wss.BMI_STEP if with_bmi else None,
        height=draw(u16) * wss.HEIGHT_STEP[unit] if with_bmi else None,
        trailing=draw(trailing),
    )


@st.composite
def glucose(draw: st.DrawFn) -> gls.GlucoseMeasurement:
    has_value = draw(st.booleans())
    return gls.GlucoseMeasurement(
        sequence_number=draw(u16),
        base_time=draw(date_times),
        time_offset_minutes=draw(optional(st.integers(-32768, 32767))),  # type: ignore[arg-type]
        concentration=draw(sfloat) if has_value else None,
        unit=draw(st.sampled_from(["kg/L", "mol/L"])) if has_value else None,
        type_code=draw(st.integers(0, 15)) if has_value else None,
        sample_location_code=draw(st.integers(0, 15)) if has_value else None,
        sensor_status=draw(optional(names(gls.SENSOR_STATUS_BITS))),  # type: ignore[arg-type]
        context_follows=draw(st.booleans()),
        trailing=draw(trailing),
    )


@st.composite
def glucose_context(draw: st.DrawFn) -> gls.GlucoseContext:
    carbs, tester, exercise, medication = (draw(st.booleans()) for _ in range(4))
    return gls.GlucoseContext(
        sequence_number=draw(u16),
        extended_flags=draw(optional(u8)),  # type: ignore[arg-type]
        carbohydrate_id=draw(u8) if carbs else None,
        carbohydrate_g=draw(sfloat) if carbs else None,
        meal=draw(optional(u8)),  # type: ignore[arg-type]
        tester=draw(st.integers(0, 15)) if tester else None,
        health=draw(st.integers(0, 15)) if tester else None,
        exercise_duration_s=draw(u16) if exercise else None,
        exercise_intensity_pct=draw(u8) if exercise else None,
        medication_id=draw(u8) if medication else None,
        medication=draw(sfloat) if medication else None,
        medication_unit=draw(st.sampled_from(["mg", "mL"])) if medication else None,
        hba1c_pct=draw(optional(sfloat)),  # type: ignore[arg-type]
        trailing=draw(trailing),
    )


@st.composite
def plx_features(draw: st.DrawFn) -> plx.PlxFeatures:
    status = draw(optional(names(plx.MEASUREMENT_STATUS_BITS)))
    sensor = draw(optional(names(plx.DEVICE_SENSOR_STATUS_BITS)))
    other = draw(names({k: v for k, v in plx.SUPPORTED_FEATURE_BITS.items() if k > 1}))
    flags = (("measurement_status_support",) if status is not None else ()) + (
        ("device_sensor_status_support",) if sensor is not None else ()
    )
    return plx.PlxFeatures(flags + other, status, sensor)  # type: ignore[arg-type]


@st.composite
def weight_feature(draw: st.DrawFn) -> wss.WeightScaleFeature:
    weight_code, height_code = draw(st.integers(0, 15)), draw(st.integers(0, 7))
    decoded = DECODERS[0x2A9E]((weight_code << 3 | height_code << 7).to_bytes(4, "little"))
    assert isinstance(decoded, wss.WeightScaleFeature)
    return wss.WeightScaleFeature(
        draw(names(wss.FEATURE_BITS)),
        weight_code,
        height_code,
        decoded.weight_resolution_kg,
        decoded.weight_resolution_lb,
        decoded.height_resolution_m,
        decoded.height_resolution_in,
    )


CASES: dict[str, tuple[int, st.SearchStrategy[object], Callable[..., bytes]]] = {
    "plx_spot": (0x2A5E, plx_spot, enc.encode_plx_spot_check),
    "plx_continuous": (0x2A5F, plx_continuous(), enc.encode_plx_continuous),
    "plx_features": (0x2A60, plx_features(), enc.encode_plx_features),
    "bp": (0x2A35, bp_measurement(), enc.encode_bp_measurement),
    "cuff": (0x2A36, cuff_pressure(), enc.encode_intermediate_cuff_pressure),
    "bp_feature": (
        0x2A49,
        st.builds(bp.BloodPressureFeature, names(bp.FEATURE_BITS)),
        enc.encode_bp_feature,
    ),
    "temperature": (0x2A1C, temperature(), enc.encode_temperature_measurement),
    "heart_rate": (0x2A37, heart_rate(), enc.encode_heart_rate_measurement),
    "weight": (0x2A9D, weight(), enc.encode_weight_measurement),
    "weight_feature": (0x2A9E, weight_feature(), enc.encode_weight_scale_feature),
    "glucose": (0x2A18, glucose(), enc.encode_glucose_measurement),
    "glucose_context": (0x2A34, glucose_context(), enc.encode_glucose_context),
    "glucose_feature": (
        0x2A51,
        st.builds(gls.GlucoseFeature, names(gls.FEATURE_BITS)),
        enc.encode_glucose_feature,
    ),
    "date_time": (0x2A08, date_times, enc.encode_date_time),
    "current_time": (
        0x2A2B,
        st.builds(cts.CurrentTime, date_times, u8, u8, names(cts.ADJUST_REASON_BITS)),
        enc.encode_current_time,
    ),
    "local_time": (
        0x2A0F,
        st.builds(
            cts.LocalTimeInformation,
            st.none() | st.integers(-127, 127),
            st.none() | st.integers(0, 254),
        ),
        enc.encode_local_time_information,
    ),
    "battery": (
        0x2A19,
        st.builds(battery.BatteryLevel, st.integers(0, 100)),
        enc.encode_battery_level,
    ),
    "system_id": (
        0x2A23,
        st.builds(dis.SystemId, st.integers(0, 2**40 - 1), st.integers(0, 2**24 - 1)),
        enc.encode_system_id,
    ),
    "pnp_id": (0x2A50, st.builds(dis.PnpId, u8, u16, u16, u16), enc.encode_pnp_id),
    "dis_string": (
        0x2A29,
        st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"])),
        enc.encode_dis_string,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
@FAST
@given(data=st.data())
def test_encode_then_decode_gives_the_same_value(case: str, data: st.DataObject) -> None:
    uuid16, strategy, encoder = CASES[case]
    value = data.draw(strategy)
    assert DECODERS[uuid16](encoder(value)) == value


SPO2, PULSE = MedFloat.of(97), MedFloat.of(72)


@pytest.mark.parametrize(
    ("uuid16", "value", "encoder", "rfu"),
    [
        (
            0x2A5E,
            plx.PlxSpotCheck(MedFloat.of(97), MedFloat.of(72)),
            enc.encode_plx_spot_check,
            0xE0,
        ),
        (
            0x2A5F,
            plx.PlxContinuous(MedFloat.of(97), MedFloat.of(72)),
            enc.encode_plx_continuous,
            0xE0,
        ),
        (
            0x2A35,
            bp.BloodPressureMeasurement(*(MedFloat.of(90),) * 3, unit="mmHg"),
            enc.encode_bp_measurement,
            0xE0,
        ),
        (
            0x2A1C,
            hts.TemperatureMeasurement(MedFloat.of("36.6"), unit="C"),
            enc.encode_temperature_measurement,
            0xF8,
        ),
        (0x2A9D, wss.WeightMeasurement("kg", Decimal("70.5")), enc.encode_weight_measurement, 0xF0),
        (
            0x2A18,
            gls.GlucoseMeasurement(7, DateTimeFields(2026, 1, 1, 0, 0, 0)),
            enc.encode_glucose_measurement,
            0xE0,
        ),
    ],
)
def test_rfu_flag_bits_do_not_change_the_decoded_value(
    uuid16: int, value: object, encoder: Callable[..., bytes], rfu: int
) -> None:
    assert DECODERS[uuid16](encoder(value, rfu_flags=rfu)) == value


def test_racp_responses_round_trip() -> None:
    assert racp.decode_racp_response(enc.encode_racp_number_of_records(513)) == (
        racp.RacpNumberOfRecords(513)
    )
    assert racp.decode_racp_response(enc.encode_racp_response(1, 6)) == racp.RacpResponse(
        1, 6, "no_records_found"
    )


def test_regulatory_list_round_trip() -> None:
    value = enc.encode_continua_version(1, 5, (0x1007, 0x1011))
    entries = (
        dis.RegCertEntry(2, 1, value, (1, 5), (0x1007, 0x1011)),
        dis.RegCertEntry(2, 2, b"\x80\x00"),
    )
    wire = enc.encode_regulatory_list(entries)
    assert dis.decode_regulatory_list(wire) == dis.RegCertDataList(entries, wire.hex())


def test_encoders_refuse_values_the_wire_cannot_carry() -> None:
    with pytest.raises(ValueError, match="whole number"):
        enc.encode_weight_measurement(wss.WeightMeasurement("kg", Decimal("70.001")))
    with pytest.raises(ValueError, match="sent together"):
        enc.encode_weight_measurement(wss.WeightMeasurement("kg", Decimal(70), bmi=Decimal(20)))
    with pytest.raises(ValueError, match="cannot be represented exactly"):
        enc.encode_bp_measurement(
            bp.BloodPressureMeasurement(MedFloat.of("120.25"), *(MedFloat.of(80),) * 2, unit="mmHg")
        )


def test_every_encoder_is_registered_for_a_decoded_characteristic() -> None:
    assert set(enc.ENCODERS) <= set(DECODERS)
