"""Encoders for the Bluetooth health characteristics: what emulated devices send.

The inverse of ``drivers._codecs``: each ``encode_*`` takes the decoded dataclass (or plain
values) and returns the characteristic value bytes, so bumble peripherals serve exactly
what a real device would, and tests can round-trip encode -> decode. Flags are derived
from which optional fields are set; ``rfu_flags`` lets a test set vendor/RFU bits too.
Values that the wire format cannot carry exactly raise ValueError (never rounded silently).
``ENCODERS`` maps each 16-bit characteristic UUID to its encoder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from drivers._codecs import bp, cts, gls, hts, plx, racp, wss
from drivers._codecs._wire import names_to_bits
from drivers._codecs.ieee11073 import MedFloat, Special, encode_float, encode_sfloat

if TYPE_CHECKING:
    from collections.abc import Callable
    from decimal import Decimal

    from drivers._codecs.battery import BatteryLevel
    from drivers._codecs.dis import PnpId, RegCertEntry, SystemId
    from drivers._codecs.hrs import HeartRateMeasurement
    from drivers._codecs.ieee11073 import DateTimeFields

_NAN: Final = MedFloat.special_value(Special.NAN)


def _u(value: int, size: int) -> bytes:
    return value.to_bytes(size, "little")


def _flags(*bits: bool, rfu_flags: int = 0) -> bytes:
    value = rfu_flags
    for index, is_set in enumerate(bits):
        value |= int(is_set) << index
    return bytes((value,))


def _opt_status(names: tuple[str, ...] | None, table: dict[int, str], size: int) -> bytes:
    return b"" if names is None else _u(names_to_bits(names, table), size)


def encode_plx_spot_check(m: plx.PlxSpotCheck, rfu_flags: int = 0) -> bytes:
    """PLX Spot-check Measurement 0x2A5E."""
    flags = _flags(
        m.timestamp is not None,
        m.measurement_status is not None,
        m.device_sensor_status is not None,
        m.pai is not None,
        m.device_clock_not_set,
        rfu_flags=rfu_flags,
    )
    return b"".join(
        (
            flags,
            encode_sfloat(m.spo2),
            encode_sfloat(m.pulse_rate),
            m.timestamp.encode() if m.timestamp else b"",
            _opt_status(m.measurement_status, plx.MEASUREMENT_STATUS_BITS, 2),
            _opt_status(m.device_sensor_status, plx.DEVICE_SENSOR_STATUS_BITS, 3),
            encode_sfloat(m.pai) if m.pai else b"",
            m.trailing,
        )
    )


def _pair(spo2: MedFloat | None, pulse: MedFloat | None) -> bytes:
    if (spo2 is None) != (pulse is None):
        raise ValueError("SpO2 and pulse rate of a fast/slow pair are sent together")
    return b"" if spo2 is None or pulse is None else encode_sfloat(spo2) + encode_sfloat(pulse)


def encode_plx_continuous(m: plx.PlxContinuous, rfu_flags: int = 0) -> bytes:
    """PLX Continuous Measurement 0x2A5F."""
    flags = _flags(
        m.spo2_fast is not None,
        m.spo2_slow is not None,
        m.measurement_status is not None,
        m.device_sensor_status is not None,
        m.pai is not None,
        rfu_flags=rfu_flags,
    )
    return b"".join(
        (
            flags,
            encode_sfloat(m.spo2),
            encode_sfloat(m.pulse_rate),
            _pair(m.spo2_fast, m.pulse_rate_fast),
            _pair(m.spo2_slow, m.pulse_rate_slow),
            _opt_status(m.measurement_status, plx.MEASUREMENT_STATUS_BITS, 2),
            _opt_status(m.device_sensor_status, plx.DEVICE_SENSOR_STATUS_BITS, 3),
            encode_sfloat(m.pai) if m.pai else b"",
            m.trailing,
        )
    )


def encode_plx_features(f: plx.PlxFeatures) -> bytes:
    """PLX Features 0x2A60; the support fields decide bits 0 and 1."""
    supported = names_to_bits(f.supported_features, plx.SUPPORTED_FEATURE_BITS) & ~0b11
    supported |= int(f.measurement_status_support is not None)
    supported |= int(f.device_sensor_status_support is not None) << 1
    return b"".join(
        (
            _u(supported, 2),
            _opt_status(f.measurement_status_support, plx.MEASUREMENT_STATUS_BITS, 2),
            _opt_status(f.device_sensor_status_support, plx.DEVICE_SENSOR_STATUS_BITS, 3),
        )
    )


def _bp_tail(
    m: bp.BloodPressureMeasurement | bp.IntermediateCuffPressure,
) -> bytes:
    status = b""
    if m.status is not None:
        ranges = bp.PULSE_RATE_RANGES
        pulse_range = ranges.index(m.pulse_rate_range or "within")
        status = _u(names_to_bits(m.status, bp.MEASUREMENT_STATUS_BITS) | pulse_range << 3, 2)
    return b"".join(
        (
            m.timestamp.encode() if m.timestamp else b"",
            encode_sfloat(m.pulse_rate) if m.pulse_rate else b"",
            bytes((m.user_id,)) if m.user_id is not None else b"",
            status,
            m.trailing,
        )
    )


def _bp_flags(m: bp.BloodPressureMeasurement | bp.IntermediateCuffPressure, rfu: int) -> bytes:
    return _flags(
        m.unit == "kPa",
        m.timestamp is not None,
        m.pulse_rate is not None,
        m.user_id is not None,
        m.status is not None,
        rfu_flags=rfu,
    )


def encode_bp_measurement(m: bp.BloodPressureMeasurement, rfu_flags: int = 0) -> bytes:
    """Blood Pressure Measurement 0x2A35."""
    values = (m.systolic, m.diastolic, m.mean_arterial_pressure)
    head = b"".join(encode_sfloat(v) for v in values)
    return _bp_flags(m, rfu_flags) + head + _bp_tail(m)


def encode_intermediate_cuff_pressure(m: bp.IntermediateCuffPressure, rfu_flags: int = 0) -> bytes:
    """Intermediate Cuff Pressure 0x2A36 (diastolic and MAP slots NaN, as BLS says)."""
    head = encode_sfloat(m.cuff_pressure) + encode_sfloat(_NAN) + encode_sfloat(_NAN)
    return _bp_flags(m, rfu_flags) + head + _bp_tail(m)


def encode_bp_feature(f: bp.BloodPressureFeature) -> bytes:
    """Blood Pressure Feature 0x2A49."""
    return _u(names_to_bits(f.features, bp.FEATURE_BITS), 2)


def encode_temperature_measurement(m: hts.TemperatureMeasurement, rfu_flags: int = 0) -> bytes:
    """Temperature Measurement 0x2A1C (and Intermediate Temperature 0x2A1E)."""
    code = m.temperature_type_code
    return b"".join(
        (
            _flags(m.unit == "F", m.timestamp is not None, code is not None, rfu_flags=rfu_flags),
            encode_float(m.temperature),
            m.timestamp.encode() if m.timestamp else b"",
            bytes((code,)) if code is not None else b"",
            m.trailing,
        )
    )


def encode_temperature_type(code: int) -> bytes:
    """Temperature Type 0x2A1D (1 armpit, 2 body, ... 9 tympanum)."""
    return bytes((code,))


def encode_heart_rate_measurement(m: HeartRateMeasurement, rfu_flags: int = 0) -> bytes:
    """Heart Rate Measurement 0x2A37."""
    contact = 0
    if m.sensor_contact_supported:
        contact = 0b11 if m.sensor_contact else 0b10
    flags = (
        int(m.heart_rate_uint16)
        | contact << 1
        | int(m.energy_expended is not None) << 3
        | int(m.rr_present or bool(m.rr_intervals_1024)) << 4
        | rfu_flags
    )
    return b"".join(
        (
            bytes((flags,)),
            _u(m.heart_rate, 2 if m.heart_rate_uint16 else 1),
            _u(m.energy_expended, 2) if m.energy_expended is not None else b"",
            b"".join(_u(rr, 2) for rr in m.rr_intervals_1024),
            m.trailing,
        )
    )


def _steps(value: Decimal, step: Decimal, field: str) -> int:
    steps = value / step
    if steps != steps.to_integral_value() or not 0 <= steps <= 0xFFFF:  # noqa: PLR2004
        raise ValueError(f"{field} {value} is not a whole number of {step} steps in 0..65535")
    return int(steps)


def encode_weight_measurement(m: wss.WeightMeasurement, rfu_flags: int = 0) -> bytes:
    """Weight Measurement 0x2A9D (weight None = Measurement Unsuccessful, 0xFFFF)."""
    if (m.bmi is None) != (m.height is None):
        raise ValueError("BMI and height are sent together (one flag bit)")
    raw_weight = wss.WEIGHT_UNSUCCESSFUL
    if m.weight is not None:
        raw_weight = _steps(m.weight, wss.WEIGHT_STEP[m.unit], "weight")
    flags = _flags(
        m.unit == "lb",
        m.timestamp is not None,
        m.user_id is not None,
        m.bmi is not None,
        rfu_flags=rfu_flags,
    )
    bmi_height = b""
    if m.bmi is not None and m.height is not None:
        bmi_raw = _steps(m.bmi, wss.BMI_STEP, "bmi")
        bmi_height = _u(bmi_raw, 2) + _u(_steps(m.height, wss.HEIGHT_STEP[m.unit], "height"), 2)
    return b"".join(
        (
            flags,
            _u(raw_weight, 2),
            m.timestamp.encode() if m.timestamp else b"",
            bytes((m.user_id,)) if m.user_id is not None else b"",
            bmi_height,
            m.trailing,
        )
    )


def encode_weight_scale_feature(f: wss.WeightScaleFeature) -> bytes:
    """Weight Scale Feature 0x2A9E."""
    raw = names_to_bits(f.features, wss.FEATURE_BITS)
    raw |= f.weight_resolution_code << 3 | f.height_resolution_code << 7
    return _u(raw, 4)


def encode_glucose_measurement(m: gls.GlucoseMeasurement, rfu_flags: int = 0) -> bytes:
    """Glucose Measurement 0x2A18."""
    has_value = m.concentration is not None
    flags = _flags(
        m.time_offset_minutes is not None,
        has_value,
        m.unit == "mol/L",
        m.sensor_status is not None,
        m.context_follows,
        rfu_flags=rfu_flags,
    )
    value = b""
    if m.concentration is not None:
        type_location = (m.type_code or 0) | (m.sample_location_code or 0) << 4
        value = encode_sfloat(m.concentration) + bytes((type_location,))
    offset = m.time_offset_minutes
    return b"".join(
        (
            flags,
            _u(m.sequence_number, 2),
            m.base_time.encode(),
            offset.to_bytes(2, "little", signed=True) if offset is not None else b"",
            value,
            _opt_status(m.sensor_status, gls.SENSOR_STATUS_BITS, 2),
            m.trailing,
        )
    )


def _context_body(c: gls.GlucoseContext) -> list[tuple[bool, bytes]]:
    """(flag bit set?, field bytes) in flag-bit order 0..6."""

    def sf(value: MedFloat | None) -> bytes:
        return encode_sfloat(value) if value is not None else b""

    return [
        (c.carbohydrate_id is not None, bytes((c.carbohydrate_id or 0,)) + sf(c.carbohydrate_g)),
        (c.meal is not None, bytes((c.meal or 0,))),
        (c.tester is not None, bytes(((c.tester or 0) | (c.health or 0) << 4,))),
        (
            c.exercise_duration_s is not None,
            _u(c.exercise_duration_s or 0, 2) + bytes((c.exercise_intensity_pct or 0,)),
        ),
        (c.medication_id is not None, bytes((c.medication_id or 0,)) + sf(c.medication)),
        (c.medication_unit == "mL", b""),
        (c.hba1c_pct is not None, sf(c.hba1c_pct)),
    ]


def encode_glucose_context(c: gls.GlucoseContext) -> bytes:
    """Glucose Measurement Context 0x2A34 (extended flags right after the sequence number)."""
    parts = _context_body(c)
    flags = sum(int(present) << bit for bit, (present, _) in enumerate(parts))
    flags |= int(c.extended_flags is not None) << 7
    extended = bytes((c.extended_flags,)) if c.extended_flags is not None else b""
    body = b"".join(field for present, field in parts if present)
    return bytes((flags,)) + _u(c.sequence_number, 2) + extended + body + c.trailing


def encode_glucose_feature(f: gls.GlucoseFeature) -> bytes:
    """Glucose Feature 0x2A51."""
    return _u(names_to_bits(f.features, gls.FEATURE_BITS), 2)


def encode_racp_number_of_records(count: int) -> bytes:
    """RACP indication `05 00 <count uint16>`."""
    return bytes((racp.OpCode.NUMBER_OF_RECORDS_RESPONSE, racp.Operator.NULL)) + _u(count, 2)


def encode_racp_response(request_op_code: int, response_code: int) -> bytes:
    """RACP indication `06 00 <request op code> <response code>`."""
    head = bytes((racp.OpCode.RESPONSE_CODE, racp.Operator.NULL))
    return head + bytes((request_op_code, response_code))


def encode_date_time(value: DateTimeFields) -> bytes:
    """Date Time 0x2A08."""
    return value.encode()


def encode_current_time(value: cts.CurrentTime) -> bytes:
    """Current Time 0x2A2B (the hub's own encoder: it writes this to set a device clock)."""
    return cts.encode_current_time(value)


def encode_local_time_information(value: cts.LocalTimeInformation) -> bytes:
    """Local Time Information 0x2A0F."""
    zone = -128 if value.time_zone_quarters is None else value.time_zone_quarters
    dst = 255 if value.dst_offset_code is None else value.dst_offset_code
    return zone.to_bytes(1, "little", signed=True) + bytes((dst,))


def encode_battery_level(value: BatteryLevel) -> bytes:
    """Battery Level 0x2A19."""
    return bytes((value.percent,))


def encode_dis_string(text: str) -> bytes:
    """A DIS utf8s string (no terminator)."""
    return text.encode("utf-8")


def encode_system_id(value: SystemId) -> bytes:
    """System ID 0x2A23: manufacturer id (40 bits) then OUI (24 bits), little-endian."""
    return _u(value.manufacturer_id, 5) + _u(value.oui, 3)


def encode_pnp_id(value: PnpId) -> bytes:
    """PnP ID 0x2A50."""
    return bytes((value.vendor_id_source,)) + b"".join(
        _u(v, 2) for v in (value.vendor_id, value.product_id, value.product_version)
    )


def encode_continua_version(major: int, minor: int, device_classes: tuple[int, ...]) -> bytes:
    """The value of a Continua version RegCertData entry (big-endian MDER)."""
    classes = b"".join(c.to_bytes(2, "big") for c in device_classes)
    count = len(device_classes).to_bytes(2, "big")
    return bytes((major, minor)) + count + len(classes).to_bytes(2, "big") + classes


def encode_regulatory_list(entries: tuple[RegCertEntry, ...]) -> bytes:
    """Regulatory Certification Data List 0x2A2A (big-endian MDER)."""
    body = b"".join(
        bytes((e.auth_body, e.struct_type)) + len(e.value).to_bytes(2, "big") + e.value
        for e in entries
    )
    return len(entries).to_bytes(2, "big") + len(body).to_bytes(2, "big") + body


# One line per characteristic the emulated peripherals serve.
ENCODERS: Final[dict[int, Callable[..., bytes]]] = {
    0x2A5E: encode_plx_spot_check,
    0x2A5F: encode_plx_continuous,
    0x2A60: encode_plx_features,
    0x2A35: encode_bp_measurement,
    0x2A36: encode_intermediate_cuff_pressure,
    0x2A49: encode_bp_feature,
    0x2A1C: encode_temperature_measurement,
    0x2A1D: encode_temperature_type,
    0x2A1E: encode_temperature_measurement,
    0x2A37: encode_heart_rate_measurement,
    0x2A9D: encode_weight_measurement,
    0x2A9E: encode_weight_scale_feature,
    0x2A18: encode_glucose_measurement,
    0x2A34: encode_glucose_context,
    0x2A51: encode_glucose_feature,
    0x2A08: encode_date_time,
    0x2A2B: encode_current_time,
    0x2A0F: encode_local_time_information,
    0x2A19: encode_battery_level,
    0x2A23: encode_system_id,
    0x2A50: encode_pnp_id,
    0x2A2A: encode_regulatory_list,
    0x2A29: encode_dis_string,
    0x2A24: encode_dis_string,
    0x2A25: encode_dis_string,
    0x2A27: encode_dis_string,
    0x2A26: encode_dis_string,
    0x2A28: encode_dis_string,
}
