"""Pulse Oximeter Service (0x1822): PLX Spot-check 0x2A5E, Continuous 0x2A5F, Features 0x2A60.

Spec: ble-profiles.md §2. Flags are walked in table order; RFU flag bits are ignored.
Bytes after the last announced field are kept in ``trailing`` (not an error: §0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from drivers._codecs._wire import Reader, flag_names

if TYPE_CHECKING:
    from drivers._codecs.ieee11073 import DateTimeFields, MedFloat

MEASUREMENT_STATUS_BITS: Final[dict[int, str]] = {
    5: "measurement_ongoing",
    6: "early_estimated_data",
    7: "validated_data",
    8: "fully_qualified_data",
    9: "data_from_measurement_storage",
    10: "data_for_demonstration",
    11: "data_for_testing",
    12: "calibration_ongoing",
    13: "measurement_unavailable",
    14: "questionable_measurement_detected",
    15: "invalid_measurement_detected",
}
DEVICE_SENSOR_STATUS_BITS: Final[dict[int, str]] = {
    0: "extended_display_update_ongoing",
    1: "equipment_malfunction_detected",
    2: "signal_processing_irregularity_detected",
    3: "inadequate_signal_detected",
    4: "poor_signal_detected",
    5: "low_perfusion_detected",
    6: "erratic_signal_detected",
    7: "nonpulsatile_signal_detected",
    8: "questionable_pulse_detected",
    9: "signal_analysis_ongoing",
    10: "sensor_interference_detected",
    11: "sensor_unconnected_to_user",
    12: "unknown_sensor_connected",
    13: "sensor_displaced",
    14: "sensor_malfunctioning",
    15: "sensor_disconnected",
}
SUPPORTED_FEATURE_BITS: Final[dict[int, str]] = {
    0: "measurement_status_support",
    1: "device_sensor_status_support",
    2: "spot_check_measurement_storage",
    3: "spot_check_timestamp",
    4: "spo2pr_fast",
    5: "spo2pr_slow",
    6: "pulse_amplitude_index",
    7: "multiple_bonds",
}


@dataclass(frozen=True, slots=True)
class PlxSpotCheck:
    """A decoded PLX Spot-check Measurement (0x2A5E). Absent optional fields are None."""

    spo2: MedFloat
    pulse_rate: MedFloat
    timestamp: DateTimeFields | None = None
    measurement_status: tuple[str, ...] | None = None
    device_sensor_status: tuple[str, ...] | None = None
    pai: MedFloat | None = None
    device_clock_not_set: bool = False
    trailing: bytes = b""


@dataclass(frozen=True, slots=True)
class PlxContinuous:
    """A decoded PLX Continuous Measurement (0x2A5F). No timestamp on the wire."""

    spo2: MedFloat
    pulse_rate: MedFloat
    spo2_fast: MedFloat | None = None
    pulse_rate_fast: MedFloat | None = None
    spo2_slow: MedFloat | None = None
    pulse_rate_slow: MedFloat | None = None
    measurement_status: tuple[str, ...] | None = None
    device_sensor_status: tuple[str, ...] | None = None
    pai: MedFloat | None = None
    trailing: bytes = b""


@dataclass(frozen=True, slots=True)
class PlxFeatures:
    """Decoded PLX Features (0x2A60): supported features and which status bits are used."""

    supported_features: tuple[str, ...]
    measurement_status_support: tuple[str, ...] | None = None
    device_sensor_status_support: tuple[str, ...] | None = None


def _statuses(
    reader: Reader, flags: int, status_bit: int, sensor_bit: int
) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    status = sensor = None
    if flags >> status_bit & 1:
        status = flag_names(reader.uint(2, "measurement_status"), MEASUREMENT_STATUS_BITS)
    if flags >> sensor_bit & 1:
        raw = reader.uint(3, "device_sensor_status")
        sensor = flag_names(raw, DEVICE_SENSOR_STATUS_BITS)
    return status, sensor


def decode_plx_spot_check(data: bytes) -> PlxSpotCheck:
    """Decode a PLX Spot-check Measurement (§2.1)."""
    reader = Reader(data, "plx_spot_check")
    flags = reader.uint(1, "flags")
    spo2 = reader.sfloat("spo2")
    pulse_rate = reader.sfloat("pulse_rate")
    timestamp = reader.date_time("timestamp") if flags & 0x01 else None
    status, sensor = _statuses(reader, flags, 1, 2)
    pai = reader.sfloat("pai") if flags & 0x08 else None
    return PlxSpotCheck(
        spo2=spo2,
        pulse_rate=pulse_rate,
        timestamp=timestamp,
        measurement_status=status,
        device_sensor_status=sensor,
        pai=pai,
        device_clock_not_set=bool(flags & 0x10),
        trailing=reader.rest(),
    )


def decode_plx_continuous(data: bytes) -> PlxContinuous:
    """Decode a PLX Continuous Measurement (§2.2)."""
    reader = Reader(data, "plx_continuous")
    flags = reader.uint(1, "flags")
    spo2 = reader.sfloat("spo2")
    pulse_rate = reader.sfloat("pulse_rate")
    fast = (reader.sfloat("spo2_fast"), reader.sfloat("pulse_rate_fast")) if flags & 1 else None
    slow = (reader.sfloat("spo2_slow"), reader.sfloat("pulse_rate_slow")) if flags & 2 else None
    status, sensor = _statuses(reader, flags, 2, 3)
    pai = reader.sfloat("pai") if flags & 0x10 else None
    return PlxContinuous(
        spo2=spo2,
        pulse_rate=pulse_rate,
        spo2_fast=fast[0] if fast else None,
        pulse_rate_fast=fast[1] if fast else None,
        spo2_slow=slow[0] if slow else None,
        pulse_rate_slow=slow[1] if slow else None,
        measurement_status=status,
        device_sensor_status=sensor,
        pai=pai,
        trailing=reader.rest(),
    )


def decode_plx_features(data: bytes) -> PlxFeatures:
    """Decode PLX Features (§2.4): 2, 4, 5 or 7 bytes as the first two bits announce."""
    reader = Reader(data, "plx_features")
    supported = reader.uint(2, "supported_features")
    status, sensor = _statuses(reader, supported, 0, 1)
    reader.expect_end()
    return PlxFeatures(
        supported_features=flag_names(supported, SUPPORTED_FEATURE_BITS),
        measurement_status_support=status,
        device_sensor_status_support=sensor,
    )
