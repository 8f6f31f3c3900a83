"""Glucose measurement, context, feature and RACP, from the layouts in ble-profiles.md §7."""

from __future__ import annotations

from datetime import datetime

import pytest

from agent.errors import DecodeError
from drivers._codecs.gls import (
    GlucoseContext,
    GlucoseFeature,
    GlucoseMeasurement,
    decode_glucose_context,
    decode_glucose_feature,
    decode_glucose_measurement,
)
from drivers._codecs.ieee11073 import DateTimeFields, MedFloat
from drivers._codecs.racp import (
    OpCode,
    Operator,
    RacpNumberOfRecords,
    RacpRequest,
    RacpResponse,
    decode_racp_request,
    decode_racp_response,
    encode_abort,
    encode_report_all_records,
    encode_report_number_of_records,
    encode_report_records_from,
)

BASE_HEX = "ea070b1b071e00"  # 2026-11-27 07:30:00
BASE = DateTimeFields(2026, 11, 27, 7, 30, 0)


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_glucose_kg_per_l_with_offset_status_and_context_flag() -> None:
    wire = h(f"1b 0101 {BASE_HEX} 3c00 78b0 11 0008")
    assert len(wire) == 17
    decoded = decode_glucose_measurement(wire)
    assert decoded == GlucoseMeasurement(
        sequence_number=0x0101,
        base_time=BASE,
        time_offset_minutes=60,
        concentration=MedFloat.of("0.00120"),
        unit="kg/L",
        type_code=1,
        sample_location_code=1,
        sensor_status=("time_fault",),
        context_follows=True,
    )
    # 120 mg/dL arrives as 120 x 10^-5 kg/L (§7.1); the conversion is exact.
    assert decoded.glucose_mg_dl == MedFloat.of(120)
    assert decoded.glucose_mg_dl is not None
    assert str(decoded.glucose_mg_dl.value) == "120.00000"
    assert decoded.glucose_mg_dl.as_float() == 120.0
    assert decoded.glucose_mmol_l is None
    assert decoded.timestamp == datetime(2026, 11, 27, 8, 30)  # noqa: DTZ001 - base + offset
    assert decoded.sample_type == "capillary_whole_blood"
    assert decoded.sample_location == "finger"


def test_glucose_mol_per_l_negative_offset() -> None:
    decoded = decode_glucose_measurement(h(f"07 0200 {BASE_HEX} e2ff 41c0 22"))
    assert decoded == GlucoseMeasurement(
        sequence_number=2,
        base_time=BASE,
        time_offset_minutes=-30,
        concentration=MedFloat.of("0.0065"),
        unit="mol/L",
        type_code=2,
        sample_location_code=2,
    )
    assert decoded.glucose_mmol_l == MedFloat.of("6.5")
    assert decoded.glucose_mg_dl is None
    assert decoded.timestamp == datetime(2026, 11, 27, 7, 0)  # noqa: DTZ001


def test_glucose_minimal_and_unset_clock() -> None:
    decoded = decode_glucose_measurement(h("00 0100 00000000000000"))
    assert decoded == GlucoseMeasurement(
        sequence_number=1, base_time=DateTimeFields(0, 0, 0, 0, 0, 0)
    )
    assert decoded.timestamp is None
    assert decoded.sample_type is None


@pytest.mark.parametrize(
    ("wire", "field"),
    [
        ("00 01", "glucose_measurement.sequence_number"),
        ("00 0100 ea07", "glucose_measurement.base_time"),
        (f"01 0100 {BASE_HEX}", "glucose_measurement.time_offset"),
        (f"02 0100 {BASE_HEX} 78b0", "glucose_measurement.type_sample_location"),
        (f"08 0100 {BASE_HEX} 00", "glucose_measurement.sensor_status"),
    ],
)
def test_glucose_truncated(wire: str, field: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_glucose_measurement(h(wire))
    assert caught.value.field == field


def test_glucose_context_every_field() -> None:
    wire = h("df 0101 00 01 3200 01 51 0807 32 01 0a00 41f0")
    assert len(wire) == 17
    assert decode_glucose_context(wire) == GlucoseContext(
        sequence_number=0x0101,
        extended_flags=0,
        carbohydrate_id=1,
        carbohydrate_g=MedFloat.of(50),
        meal=1,
        tester=1,
        health=5,
        exercise_duration_s=1800,
        exercise_intensity_pct=50,
        medication_id=1,
        medication=MedFloat.of(10),
        medication_unit="mg",
        hba1c_pct=MedFloat.of("6.5"),
    )


def test_glucose_context_medication_in_ml_and_padding_kept() -> None:
    # Nordic decodes a 17-byte context whose tail is padding (§12.15).
    assert decode_glucose_context(h("30 0200 04 05f0 000000")) == GlucoseContext(
        sequence_number=2,
        medication_id=4,
        medication=MedFloat.of("0.5"),
        medication_unit="mL",
        trailing=b"\x00\x00\x00",
    )


def test_glucose_context_extended_flags_come_first() -> None:
    with pytest.raises(DecodeError, match=r"glucose_context.carbohydrate"):
        decode_glucose_context(h("81 0100 00 01"))


def test_glucose_feature() -> None:
    assert decode_glucose_feature(h("0106")) == GlucoseFeature(
        features=("low_battery_detection", "time_fault", "multiple_bond")
    )
    with pytest.raises(DecodeError, match=r"glucose_feature.length"):
        decode_glucose_feature(h("010600"))


# ---- RACP -----------------------------------------------------------------------------


def test_racp_request_encoders_match_the_spec_examples() -> None:
    assert encode_report_all_records() == h("01 01")
    # Last seen 0x0101 -> ask for >= 0x0102: `01 03 01 02 01` (§7.4).
    assert encode_report_records_from(0x0102) == h("01 03 01 02 01")
    assert encode_report_number_of_records() == h("04 01")
    assert encode_report_number_of_records(5) == h("04 03 01 05 00")
    assert encode_abort() == h("03 00")
    with pytest.raises(ValueError, match=r"0..65535"):
        encode_report_records_from(0x10000)


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ("06 00 01 01", RacpResponse(1, 1, "success")),
        ("06 00 01 06", RacpResponse(1, 6, "no_records_found")),
        ("06 00 03 01", RacpResponse(3, 1, "success")),
        ("06 00 01 0a", RacpResponse(1, 10, "reserved")),
        ("05 00 0500", RacpNumberOfRecords(5)),
        ("05 00 05", RacpNumberOfRecords(5)),
        ("05 00 05000000", RacpNumberOfRecords(5)),
    ],
)
def test_racp_responses(wire: str, expected: object) -> None:
    assert decode_racp_response(h(wire)) == expected


def test_racp_response_predicates() -> None:
    assert RacpResponse(1, 1, "success").is_success
    assert RacpResponse(1, 6, "no_records_found").is_no_records
    assert not RacpResponse(1, 8, "procedure_not_completed").is_success


@pytest.mark.parametrize(
    ("wire", "field"),
    [
        ("05 00", "racp.count"),
        ("05 00 050000", "racp.count"),
        ("06 00 01 01 ff", "racp.length"),
        ("06 00 01", "racp.response_code"),
        ("07 00", "racp.op_code"),
        ("01 01", "racp.op_code"),
        ("05 01 0500", "racp.operator"),
        ("06", "racp.operator"),
    ],
)
def test_racp_malformed_responses(wire: str, field: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_racp_response(h(wire))
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ("01 01", RacpRequest(OpCode.REPORT_STORED_RECORDS, Operator.ALL_RECORDS)),
        ("03 00", RacpRequest(OpCode.ABORT_OPERATION, Operator.NULL)),
        (
            "01 03 01 0201",
            RacpRequest(OpCode.REPORT_STORED_RECORDS, Operator.GREATER_THAN_OR_EQUAL, 1, 0x0102),
        ),
        (
            "04 02 01 0a00",
            RacpRequest(OpCode.REPORT_NUMBER_OF_RECORDS, Operator.LESS_THAN_OR_EQUAL, 1, None, 10),
        ),
        (
            "01 04 01 0100 0500",
            RacpRequest(OpCode.REPORT_STORED_RECORDS, Operator.WITHIN_RANGE, 1, 1, 5),
        ),
    ],
)
def test_racp_requests_as_an_emulated_meter_sees_them(wire: str, expected: RacpRequest) -> None:
    assert decode_racp_request(h(wire)) == expected


@pytest.mark.parametrize(
    ("wire", "field"),
    [
        ("09 01", "racp_request.op_code"),
        ("01 07", "racp_request.operator"),
        ("01 03 02 ea070b1b000000", "racp_request.filter_type"),
        ("01 03 01 02", "racp_request.operand"),
        ("01 01 00", "racp_request.length"),
    ],
)
def test_racp_malformed_requests(wire: str, field: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_racp_request(h(wire))
    assert caught.value.field == field
