"""Decoded BLE measurements -> whole Readings (everything but the random id and key)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.clock import HubTime, TimeSource
from agent.errors import DecodeError
from agent.readings import (
    QUANTITY_UNITS,
    Cadence,
    DeviceIdentity,
    Kind,
    PatientBinding,
    Quantity,
    Reading,
)
from drivers._codecs import bp, gls, hrs, hts, plx, wss
from drivers._codecs.ieee11073 import DateTimeFields, MedFloat, Special
from drivers._codecs.registry import DECODERS
from drivers.ble.mapping import (
    MEASUREMENT_UUIDS,
    PROFILES,
    GlucoseRecord,
    measurement_to_readings,
)

DEVICE = DeviceIdentity(device_id="cuff-1", driver="ble-health", address="AA:BB:CC:DD:EE:FF")
PATIENT = PatientBinding(patient_id="patient-42", binding_version=3)
RECEIVED = HubTime(
    utc=datetime(2026, 11, 27, 10, 20, tzinfo=UTC), monotonic_ns=5, boot_id="b", clock_synced=True
)
ZERO = uuid.UUID(int=0)
NAN = MedFloat(None, Special.NAN)


def map_raw(
    uuid16: int, decoded: object, zone: str = "Europe/London", offset_s: float | None = None
) -> list[Reading]:
    """The Readings for one decoded value from DEVICE for PATIENT, received at RECEIVED."""
    return measurement_to_readings(
        uuid16,
        decoded,
        device=DEVICE,
        patient=PATIENT,
        received=RECEIVED,
        driver_version="1.0",
        timezone_name=zone,
        device_clock_offset_s=offset_s,
    )


def map_one(uuid16: int, decoded: object, offset_s: float | None = None) -> list[Reading]:
    """``map_raw`` in London, with the random id and the natural key blanked for comparison."""
    readings = map_raw(uuid16, decoded, offset_s=offset_s)
    return [dataclasses.replace(r, reading_id=ZERO, natural_key="") for r in readings]


def expected(**fields: object) -> Reading:
    base: dict[str, object] = {
        "reading_id": ZERO,
        "device": DEVICE,
        "patient": PATIENT,
        "received": RECEIVED,
        "natural_key": "",
        "driver_version": "1.0",
        "effective_time": RECEIVED.utc,
        "time_source": TimeSource.HUB_RECEIPT,
    }
    return Reading(**{**base, **fields})  # type: ignore[arg-type]


def test_blood_pressure_mmhg_with_pulse_status_and_device_time() -> None:
    decoded = bp.BloodPressureMeasurement(
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
    assert map_one(0x2A35, decoded) == [
        expected(
            kind=Kind.BLOOD_PRESSURE,
            cadence=Cadence.SPOT,
            values=(
                Quantity("systolic", 120.0, "mm[Hg]"),
                Quantity("diastolic", 80.0, "mm[Hg]"),
                Quantity("mean_arterial_pressure", 93.0, "mm[Hg]"),
                Quantity("pulse_rate", 65.0, "/min"),
            ),
            # November in London is GMT: the device's wall time is UTC here.
            effective_time=datetime(2026, 11, 27, 8, 0, tzinfo=UTC),
            time_source=TimeSource.DEVICE,
            device_time="2026-11-27T08:00:00",
            status=("body_movement", "irregular_pulse", "pulse_rate_above_upper"),
            extra={"user_id": "1"},
        )
    ]


def test_blood_pressure_kpa_with_a_nan_stays_kpa_and_has_no_number() -> None:
    decoded = bp.BloodPressureMeasurement(
        systolic=MedFloat.of("16.0"),
        diastolic=NAN,
        mean_arterial_pressure=MedFloat.of("12.4"),
        unit="kPa",
        user_id=0xFF,
    )
    assert map_one(0x2A35, decoded) == [
        expected(
            kind=Kind.BLOOD_PRESSURE,
            cadence=Cadence.SPOT,
            values=(
                Quantity("systolic", 16.0, "kPa"),
                Quantity("diastolic", None, "kPa", "nan"),
                Quantity("mean_arterial_pressure", 12.4, "kPa"),
            ),
            extra={"user_id": "unknown"},
        )
    ]


def test_stored_bp_record_resent_maps_to_the_same_natural_key() -> None:
    decoded = bp.BloodPressureMeasurement(
        systolic=MedFloat.of(120),
        diastolic=MedFloat.of(80),
        mean_arterial_pressure=MedFloat.of(93),
        unit="mmHg",
        timestamp=DateTimeFields(2026, 11, 27, 8, 0, 0),
    )
    first = map_raw(0x2A35, decoded, zone="UTC")
    again = map_raw(0x2A35, decoded, zone="UTC")
    assert first[0].natural_key == again[0].natural_key
    assert first[0].reading_id != again[0].reading_id


def test_intermediate_values_and_a_lone_context_are_not_readings() -> None:
    cuff = bp.IntermediateCuffPressure(cuff_pressure=MedFloat.of(150), unit="mmHg")
    assert map_one(0x2A36, cuff) == []
    interim = hts.TemperatureMeasurement(temperature=MedFloat.of("36.1"), unit="C")
    assert map_one(0x2A1E, interim) == []
    assert map_one(0x2A34, gls.GlucoseContext(sequence_number=1)) == []


def test_plx_spot_check_with_unset_clock_uses_receipt_time_and_keeps_device_time() -> None:
    decoded = plx.PlxSpotCheck(
        spo2=MedFloat.of(97),
        pulse_rate=MedFloat.of(72),
        timestamp=DateTimeFields(2026, 11, 27, 10, 15, 30),
        measurement_status=("validated_data",),
        device_sensor_status=("low_perfusion_detected",),
        pai=MedFloat.of("2.5"),
        device_clock_not_set=True,
    )
    assert map_one(0x2A5E, decoded) == [
        expected(
            kind=Kind.SPO2,
            cadence=Cadence.SPOT,
            values=(
                Quantity("spo2", 97.0, "%"),
                Quantity("pulse_rate", 72.0, "/min"),
                Quantity("perfusion_index", 2.5, "%"),
            ),
            device_time="2026-11-27T10:15:30",
            time_flags=("device_clock_unset",),
            status=("validated_data", "low_perfusion_detected"),
        )
    ]


def test_plx_continuous_is_continuous_with_fast_and_slow_as_extra() -> None:
    decoded = plx.PlxContinuous(
        spo2=MedFloat(None, Special.NRES),
        pulse_rate=MedFloat.of(70),
        spo2_fast=MedFloat.of(97),
        pulse_rate_fast=MedFloat(Decimal(7).scaleb(1)),  # 0x1007 decodes to Decimal("7E+1")
        spo2_slow=MedFloat(None, Special.POS_INF),
        pulse_rate_slow=MedFloat.of("69.0"),
        measurement_status=("measurement_ongoing",),
    )
    assert map_one(0x2A5F, decoded) == [
        expected(
            kind=Kind.SPO2,
            cadence=Cadence.CONTINUOUS,
            values=(Quantity("spo2", None, "%", "nres"), Quantity("pulse_rate", 70.0, "/min")),
            status=("measurement_ongoing",),
            extra={
                "spo2_fast": "97",
                "pulse_rate_fast": "70",
                "spo2_slow": "+inf",
                "pulse_rate_slow": "69.0",
            },
        )
    ]


def test_temperature_fahrenheit_with_site_and_corrected_device_time() -> None:
    decoded = hts.TemperatureMeasurement(
        temperature=MedFloat.of("98.6"),
        unit="F",
        timestamp=DateTimeFields(2026, 11, 27, 10, 0, 30),
        temperature_type="tympanum",
        temperature_type_code=9,
    )
    assert map_one(0x2A1C, decoded, offset_s=30.0) == [
        expected(
            kind=Kind.BODY_TEMPERATURE,
            cadence=Cadence.SPOT,
            values=(Quantity("body_temperature", 98.6, "[degF]"),),
            effective_time=datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC),
            time_source=TimeSource.DEVICE_CORRECTED,
            device_time="2026-11-27T10:00:30",
            device_clock_offset_s=30.0,
            extra={"temperature_type": "tympanum", "temperature_type_code": "9"},
        )
    ]


def test_temperature_with_an_impossible_date_falls_back_to_receipt_time() -> None:
    decoded = hts.TemperatureMeasurement(
        temperature=MedFloat.of("36.6"), unit="C", timestamp=DateTimeFields(2026, 13, 1, 0, 0, 0)
    )
    assert map_one(0x2A1C, decoded) == [
        expected(
            kind=Kind.BODY_TEMPERATURE,
            cadence=Cadence.SPOT,
            values=(Quantity("body_temperature", 36.6, "Cel"),),
            status=("device_time_invalid",),
        )
    ]


def test_heart_rate_with_energy_rr_and_lost_contact() -> None:
    decoded = hrs.HeartRateMeasurement(
        heart_rate=72,
        sensor_contact_supported=True,
        sensor_contact=False,
        energy_expended=12,
        rr_intervals_1024=(1024, 973),
        rr_present=True,
    )
    assert map_one(0x2A37, decoded) == [
        expected(
            kind=Kind.HEART_RATE,
            cadence=Cadence.CONTINUOUS,
            values=(
                Quantity("heart_rate", 72.0, "/min"),
                Quantity("energy_expended", 12.0, "kJ"),
                Quantity("rr_interval", 1.0, "s"),
                Quantity("rr_interval", 0.9501953125, "s"),
            ),
            status=("no_sensor_contact",),
        )
    ]


def test_heart_rate_zero_while_acquiring_is_not_a_reading() -> None:
    decoded = hrs.HeartRateMeasurement(0, sensor_contact_supported=False, sensor_contact=None)
    assert map_one(0x2A37, decoded) == []


def test_weight_imperial_with_bmi_and_height() -> None:
    decoded = wss.WeightMeasurement(
        unit="lb",
        weight=Decimal("155.43"),
        timestamp=DateTimeFields(2026, 11, 27, 7, 0, 0),
        user_id=2,
        bmi=Decimal("23.1"),
        height=Decimal("69.2"),
    )
    assert map_one(0x2A9D, decoded) == [
        expected(
            kind=Kind.BODY_WEIGHT,
            cadence=Cadence.SPOT,
            values=(
                Quantity("body_weight", 155.43, "[lb_av]"),
                Quantity("body_height", 69.2, "[in_i]"),
                Quantity("bmi", 23.1, "kg/m2"),
            ),
            effective_time=datetime(2026, 11, 27, 7, 0, tzinfo=UTC),
            time_source=TimeSource.DEVICE,
            device_time="2026-11-27T07:00:00",
            extra={"user_id": "2"},
        )
    ]


def test_unsuccessful_weighing_is_kept_without_a_number() -> None:
    decoded = wss.WeightMeasurement(unit="kg", weight=None, measurement_unsuccessful=True)
    assert map_one(0x2A9D, decoded) == [
        expected(
            kind=Kind.BODY_WEIGHT,
            cadence=Cadence.SPOT,
            values=(Quantity("body_weight", None, "kg", "nan"),),
            status=("measurement_unsuccessful",),
        )
    ]


def test_glucose_with_offset_and_context() -> None:
    measurement = gls.GlucoseMeasurement(
        sequence_number=257,
        base_time=DateTimeFields(2026, 11, 27, 7, 30, 0),
        time_offset_minutes=60,
        concentration=MedFloat(Decimal(120).scaleb(-5)),
        unit="kg/L",
        type_code=1,
        sample_location_code=1,
        sensor_status=("time_fault",),
        context_follows=True,
    )
    context = gls.GlucoseContext(
        sequence_number=257,
        carbohydrate_id=1,
        carbohydrate_g=MedFloat.of(50),
        meal=1,
        tester=1,
        health=5,
        exercise_duration_s=0xFFFF,
        exercise_intensity_pct=50,
        medication_id=1,
        medication=MedFloat.of(10),
        medication_unit="mg",
        hba1c_pct=MedFloat.of("6.5"),
    )
    assert map_one(0x2A18, GlucoseRecord(measurement, context)) == [
        expected(
            kind=Kind.GLUCOSE,
            cadence=Cadence.SPOT,
            values=(Quantity("glucose", 120.0, "mg/dL"),),
            effective_time=datetime(2026, 11, 27, 8, 30, tzinfo=UTC),
            time_source=TimeSource.DEVICE,
            device_time="2026-11-27T08:30:00",
            device_seq=257,
            status=("time_fault",),
            extra={
                "base_time": "ea070b1b071e00",
                "time_offset_minutes": "60",
                "sample_type": "capillary_whole_blood",
                "sample_type_code": "1",
                "sample_location": "finger",
                "sample_location_code": "1",
                "carbohydrate": "breakfast",
                "meal": "preprandial",
                "tester": "self",
                "health": "no_health_issues",
                "medication": "rapid_acting_insulin",
                "carbohydrate_g": "50",
                "medication_mg": "10",
                "hba1c_pct": "6.5",
                "exercise_duration_s": "overrun",
                "exercise_intensity_pct": "50",
            },
        )
    ]


def test_glucose_mmol_control_solution_is_flagged() -> None:
    measurement = gls.GlucoseMeasurement(
        sequence_number=3,
        base_time=DateTimeFields(0, 0, 0, 0, 0, 0),
        concentration=MedFloat(Decimal(65).scaleb(-4)),
        unit="mol/L",
        type_code=10,
        sample_location_code=4,
    )
    readings = map_one(0x2A18, measurement)
    assert readings == [
        expected(
            kind=Kind.GLUCOSE,
            cadence=Cadence.SPOT,
            values=(Quantity("glucose", 6.5, "mmol/L"),),
            device_seq=3,
            status=("device_time_invalid", "control_solution"),
            extra={
                "base_time": "00000000000000",
                "sample_type": "control_solution",
                "sample_type_code": "10",
                "sample_location": "control_solution",
                "sample_location_code": "4",
            },
        )
    ]


def test_glucose_record_without_a_concentration_is_not_a_reading() -> None:
    record = gls.GlucoseMeasurement(
        sequence_number=4,
        base_time=DateTimeFields(2026, 11, 27, 7, 0, 0),
        sensor_status=("strip_insertion_error",),
    )
    assert map_one(0x2A18, record) == []


def test_wiring_mistakes_are_loud() -> None:
    with pytest.raises(ValueError, match="0x2A19 does not carry readings"):
        map_one(0x2A19, object())
    with pytest.raises(TypeError, match="0x2A35 expects BloodPressureMeasurement"):
        map_one(0x2A35, plx.PlxSpotCheck(MedFloat.of(97), MedFloat.of(72)))


def test_profiles_are_consistent_with_the_decoders() -> None:
    assert set(PROFILES) == {
        "pulse-oximeter",
        "blood-pressure",
        "thermometer",
        "heart-rate",
        "weight-scale",
        "glucose",
    }
    for name, spec in PROFILES.items():
        assert spec.name == name
        subscribed = set(spec.indicate_uuids) | set(spec.notify_uuids)
        assert set(spec.measurement_uuids) <= subscribed
        assert MEASUREMENT_UUIDS[name] == spec.measurement_uuids
        for uuid16 in (*subscribed, *spec.feature_uuids):
            assert uuid16 in DECODERS
    assert PROFILES["blood-pressure"].indicate_uuids == (0x2A35,)
    assert PROFILES["glucose"].racp_uuid == 0x2A52
    assert PROFILES["heart-rate"].continuous
    assert not PROFILES["weight-scale"].continuous


def test_every_mapped_quantity_uses_the_shared_names_and_units() -> None:
    samples: list[tuple[int, object]] = [
        (0x2A35, bp.BloodPressureMeasurement(*(MedFloat.of(1),) * 3, unit="kPa", pulse_rate=NAN)),
        (0x2A5E, plx.PlxSpotCheck(MedFloat.of(1), MedFloat.of(1), pai=MedFloat.of(1))),
        (0x2A1C, hts.TemperatureMeasurement(MedFloat.of(1), unit="C")),
        (
            0x2A37,
            hrs.HeartRateMeasurement(
                60,
                sensor_contact_supported=False,
                sensor_contact=None,
                energy_expended=1,
                rr_intervals_1024=(512,),
                rr_present=True,
            ),
        ),
        (0x2A9D, wss.WeightMeasurement("kg", Decimal(1), bmi=Decimal(1), height=Decimal(1))),
        (
            0x2A18,
            gls.GlucoseMeasurement(1, DateTimeFields(0, 0, 0, 0, 0, 0), None, NAN, "mol/L", 1, 1),
        ),
    ]
    for uuid16, decoded in samples:
        for reading in map_one(uuid16, decoded):
            for quantity in reading.values:
                assert quantity.unit in QUANTITY_UNITS[quantity.name]
                assert (quantity.value is None) == (quantity.special is not None)


def test_a_real_date_the_hub_cannot_place_falls_back_to_receipt_time() -> None:
    # 9999-12-31 23:00 in New York is past datetime.max in UTC.
    decoded = bp.BloodPressureMeasurement(
        *(MedFloat.of(100),) * 3, unit="mmHg", timestamp=DateTimeFields(9999, 12, 31, 23, 0, 0)
    )
    readings = map_raw(0x2A35, decoded, zone="America/New_York")
    assert len(readings) == 1
    assert readings[0].effective_time == RECEIVED.utc
    assert readings[0].time_source == TimeSource.HUB_RECEIPT
    assert readings[0].device_time is None
    assert readings[0].status == ("device_time_invalid",)


@pytest.mark.parametrize(
    "uuid16", sorted({u for uuids in MEASUREMENT_UUIDS.values() for u in uuids})
)
@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=24),
    zone=st.sampled_from(["UTC", "Europe/London", "America/New_York", "Pacific/Kiritimati"]),
    offset_s=st.none() | st.floats(-4e11, 4e11),
)
def test_any_decodable_packet_maps_without_error(
    uuid16: int, data: bytes, zone: str, offset_s: float | None
) -> None:
    try:
        decoded = DECODERS[uuid16](data)
    except DecodeError:
        return
    for reading in map_raw(uuid16, decoded, zone=zone, offset_s=offset_s):
        assert reading.patient == PATIENT
        for quantity in reading.values:
            assert quantity.unit in QUANTITY_UNITS[quantity.name]
