"""Decoded GATT health measurements -> Readings, and the profile table drivers rely on.

Spec: ble-profiles.md §2-§7 and §10. Quantity names and UCUM units are those of
``agent.readings.QUANTITY_UNITS``. Values keep the unit the device sent (kPa stays kPa,
°F stays °F); only the glucose concentration is rescaled, exactly, from the SI wire unit
(kg/L x 100000 -> mg/dL, mol/L x 1000 -> mmol/L). Special IEEE-11073 values become
``Quantity(value=None, special=...)``. Progress-only characteristics (Intermediate Cuff
Pressure 0x2A36, Intermediate Temperature 0x2A1E) and the glucose context 0x2A34 on its
own map to no reading; join a context to its measurement with ``GlucoseRecord``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

from agent.readings import Cadence, Kind, Quantity, make_reading
from drivers._codecs import bp, gls, hrs, hts, plx, wss
from drivers._codecs.gls import CARBOHYDRATES, HEALTH, MEALS, MEDICATIONS, TESTERS, enum_name

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime
    from decimal import Decimal

    from agent.clock import HubTime
    from agent.readings import DeviceIdentity, PatientBinding, Reading
    from drivers._codecs.ieee11073 import DateTimeFields, MedFloat


@dataclass(frozen=True, slots=True)
class ProfileSpec:
    """What a driver needs to know about one GATT health profile.

    Attributes:
        name: Profile name used in config ("blood-pressure", ...).
        service_uuid: 16-bit service UUID.
        indicate_uuids: Characteristics to enable indications on.
        notify_uuids: Characteristics to enable notifications on.
        measurement_uuids: Those of the above whose values become Readings.
        feature_uuids: Read-only feature characteristics (read once after connect).
        racp_uuid: Record Access Control Point, if the profile uses stored records.
        continuous: True when the device streams (notify), False when episodic.
    """

    name: str
    service_uuid: int
    indicate_uuids: tuple[int, ...]
    notify_uuids: tuple[int, ...]
    measurement_uuids: tuple[int, ...]
    feature_uuids: tuple[int, ...]
    racp_uuid: int | None
    continuous: bool


PROFILES: Final[dict[str, ProfileSpec]] = {
    # PLX: spot-check is indicated, continuous notified (§2); RACP only for stored spot-checks.
    "pulse-oximeter": ProfileSpec(
        "pulse-oximeter",
        0x1822,
        (0x2A5E,),
        (0x2A5F,),
        (0x2A5E, 0x2A5F),
        (0x2A60,),
        None,
        continuous=True,
    ),
    # BP: 0x2A36 is progress only (notify, optional), never a reading (§3.2).
    "blood-pressure": ProfileSpec(
        "blood-pressure", 0x1810, (0x2A35,), (0x2A36,), (0x2A35,), (0x2A49,), None, continuous=False
    ),
    # HTS: 0x2A1E is non-final (§4.1); 0x2A1D (static site) is read, not subscribed.
    "thermometer": ProfileSpec(
        "thermometer", 0x1809, (0x2A1C,), (0x2A1E,), (0x2A1C,), (0x2A1D,), None, continuous=False
    ),
    "heart-rate": ProfileSpec(
        "heart-rate", 0x180D, (), (0x2A37,), (0x2A37,), (), None, continuous=True
    ),
    "weight-scale": ProfileSpec(
        "weight-scale", 0x181D, (0x2A9D,), (), (0x2A9D,), (0x2A9E,), None, continuous=False
    ),
    # GLS: records are fetched through the RACP (indicate) and arrive as notifications (§7).
    "glucose": ProfileSpec(
        "glucose",
        0x1808,
        (0x2A52,),
        (0x2A18, 0x2A34),
        (0x2A18,),
        (0x2A51,),
        0x2A52,
        continuous=False,
    ),
}
MEASUREMENT_UUIDS: Final[dict[str, tuple[int, ...]]] = {
    name: spec.measurement_uuids for name, spec in PROFILES.items()
}
# Characteristics that are valid to pass here but are not readings on their own.
NOT_READINGS: Final = frozenset({0x2A36, 0x2A1E, 0x2A34})


@dataclass(frozen=True, slots=True)
class GlucoseRecord:
    """A glucose measurement joined with its context (same sequence number), if any."""

    measurement: gls.GlucoseMeasurement
    context: gls.GlucoseContext | None = None


@dataclass(frozen=True, slots=True)
class _Draft:
    """What one mapper decides; ``measurement_to_readings`` adds the shared arguments."""

    kind: Kind
    cadence: Cadence
    values: tuple[Quantity, ...]
    device_time: datetime | None = None
    device_clock_unset: bool = False
    device_seq: int | None = None
    status: tuple[str, ...] = ()
    extra: dict[str, str] | None = None


def _q(name: str, number: MedFloat, unit: str) -> Quantity:
    return Quantity(
        name, number.as_float(), unit, None if number.special is None else number.special.value
    )


def _text(number: MedFloat) -> str:
    """Plain decimal text for ``extra`` ("10", never "1E+1"); the special's name if special."""
    if number.value is None:
        return str(number.special)
    return format(number.value, "f")


def _exact(name: str, number: Decimal, unit: str) -> Quantity:
    return Quantity(name, float(number), unit)


def _device_time(stamp: DateTimeFields | None) -> tuple[datetime | None, tuple[str, ...]]:
    """The naive device time, or a status saying the sent timestamp is not a usable date."""
    if stamp is None:
        return None, ()
    moment = stamp.to_datetime()
    return moment, (() if moment is not None else ("device_time_invalid",))


def _plx_values(m: plx.PlxSpotCheck | plx.PlxContinuous) -> list[Quantity]:
    """SpO2 and pulse rate, then the perfusion index when the device sent one."""
    values = [_q("spo2", m.spo2, "%"), _q("pulse_rate", m.pulse_rate, "/min")]
    if m.pai is not None:
        values.append(_q("perfusion_index", m.pai, "%"))
    return values


def _plx_spot(m: plx.PlxSpotCheck) -> list[_Draft]:
    values = _plx_values(m)
    moment, time_status = _device_time(m.timestamp)
    status = (*(m.measurement_status or ()), *(m.device_sensor_status or ()), *time_status)
    return [
        _Draft(
            Kind.SPO2, Cadence.SPOT, tuple(values), moment, m.device_clock_not_set, status=status
        )
    ]


def _plx_continuous(m: plx.PlxContinuous) -> list[_Draft]:
    values = _plx_values(m)
    extra = {
        name: _text(number)
        for name, number in (
            ("spo2_fast", m.spo2_fast),
            ("pulse_rate_fast", m.pulse_rate_fast),
            ("spo2_slow", m.spo2_slow),
            ("pulse_rate_slow", m.pulse_rate_slow),
        )
        if number is not None
    }
    status = (*(m.measurement_status or ()), *(m.device_sensor_status or ()))
    return [_Draft(Kind.SPO2, Cadence.CONTINUOUS, tuple(values), status=status, extra=extra)]


def _bp(m: bp.BloodPressureMeasurement) -> list[_Draft]:
    unit = "kPa" if m.unit == "kPa" else "mm[Hg]"
    values = [
        _q("systolic", m.systolic, unit),
        _q("diastolic", m.diastolic, unit),
        _q("mean_arterial_pressure", m.mean_arterial_pressure, unit),
    ]
    if m.pulse_rate is not None:
        values.append(_q("pulse_rate", m.pulse_rate, "/min"))
    moment, time_status = _device_time(m.timestamp)
    status = [*(m.status or ()), *time_status]
    if m.pulse_rate_range not in {None, "within"}:
        status.append(f"pulse_rate_{m.pulse_rate_range}")
    extra = {} if m.user_id is None else {"user_id": _user(m.user_id)}
    return [
        _Draft(
            Kind.BLOOD_PRESSURE,
            Cadence.SPOT,
            tuple(values),
            moment,
            status=tuple(status),
            extra=extra,
        )
    ]


def _user(user_id: int) -> str:
    return "unknown" if user_id == 0xFF else str(user_id)  # noqa: PLR2004 - 0xFF = unknown user


def _temperature(m: hts.TemperatureMeasurement) -> list[_Draft]:
    value = _q("body_temperature", m.temperature, "[degF]" if m.unit == "F" else "Cel")
    moment, time_status = _device_time(m.timestamp)
    extra = {}
    if m.temperature_type is not None:
        extra = {
            "temperature_type": m.temperature_type,
            "temperature_type_code": str(m.temperature_type_code),
        }
    return [
        _Draft(
            Kind.BODY_TEMPERATURE, Cadence.SPOT, (value,), moment, status=time_status, extra=extra
        )
    ]


def _heart_rate(m: hrs.HeartRateMeasurement) -> list[_Draft]:
    if m.heart_rate == 0:
        return []  # sensors send 0 while acquiring: not a reading (§5.1)
    values = [Quantity("heart_rate", float(m.heart_rate), "/min")]
    if m.energy_expended is not None:
        values.append(Quantity("energy_expended", float(m.energy_expended), "kJ"))
    values.extend(Quantity("rr_interval", seconds, "s") for seconds in m.rr_intervals_s)
    status = ("no_sensor_contact",) if m.sensor_contact is False else ()
    return [_Draft(Kind.HEART_RATE, Cadence.CONTINUOUS, tuple(values), status=status)]


def _weight(m: wss.WeightMeasurement) -> list[_Draft]:
    imperial = m.unit == "lb"
    weight_unit, height_unit = ("[lb_av]", "[in_i]") if imperial else ("kg", "m")
    if m.weight is None:
        values = [Quantity("body_weight", None, weight_unit, "nan")]
    else:
        values = [_exact("body_weight", m.weight, weight_unit)]
    if m.height is not None:
        values.append(_exact("body_height", m.height, height_unit))
    if m.bmi is not None:
        values.append(_exact("bmi", m.bmi, "kg/m2"))
    moment, time_status = _device_time(m.timestamp)
    status = (*(("measurement_unsuccessful",) if m.measurement_unsuccessful else ()), *time_status)
    extra = {} if m.user_id is None else {"user_id": _user(m.user_id)}
    return [
        _Draft(Kind.BODY_WEIGHT, Cadence.SPOT, tuple(values), moment, status=status, extra=extra)
    ]


def _glucose_quantity(m: gls.GlucoseMeasurement) -> Quantity | None:
    if m.glucose_mg_dl is not None:
        return _q("glucose", m.glucose_mg_dl, "mg/dL")
    if m.glucose_mmol_l is not None:
        return _q("glucose", m.glucose_mmol_l, "mmol/L")
    return None


def _glucose_extra(m: gls.GlucoseMeasurement) -> dict[str, str]:
    extra = {"base_time": m.base_time.encode().hex()}
    if m.time_offset_minutes is not None:
        extra["time_offset_minutes"] = str(m.time_offset_minutes)
    if m.type_code is not None and m.sample_location_code is not None:
        extra["sample_type"] = m.sample_type or ""
        extra["sample_type_code"] = str(m.type_code)
        extra["sample_location"] = m.sample_location or ""
        extra["sample_location_code"] = str(m.sample_location_code)
    return extra


def _context_extra(c: gls.GlucoseContext) -> dict[str, str]:
    """Context facts as strings; enumerations by name (RFU codes as "reserved")."""
    named = {
        "carbohydrate": (c.carbohydrate_id, CARBOHYDRATES),
        "meal": (c.meal, MEALS),
        "tester": (c.tester, TESTERS),
        "health": (c.health, HEALTH),
        "medication": (c.medication_id, MEDICATIONS),
    }
    extra = {
        key: enum_name(table, code) for key, (code, table) in named.items() if code is not None
    }
    numbers = {
        "carbohydrate_g": c.carbohydrate_g,
        f"medication_{c.medication_unit}": c.medication,
        "hba1c_pct": c.hba1c_pct,
    }
    for key, number in numbers.items():
        if number is not None:
            extra[key] = _text(number)
    if c.exercise_duration_s is not None:
        overrun = c.exercise_duration_s == gls.EXERCISE_DURATION_OVERRUN
        extra["exercise_duration_s"] = "overrun" if overrun else str(c.exercise_duration_s)
        extra["exercise_intensity_pct"] = str(c.exercise_intensity_pct)
    return extra


def _glucose(record: GlucoseRecord) -> list[_Draft]:
    m = record.measurement
    value = _glucose_quantity(m)
    if value is None:
        return []  # no concentration (flag bit 1 clear): a status-only record, not a reading
    moment = m.timestamp
    status = [*(m.sensor_status or ()), *(() if moment is not None else ("device_time_invalid",))]
    if m.type_code == 10 or m.sample_location_code == 4:  # noqa: PLR2004 - §7.1 control solution
        status.append("control_solution")  # a QC check, not a patient value
    extra = _glucose_extra(m)
    if record.context is not None:
        extra.update(_context_extra(record.context))
    draft = _Draft(
        Kind.GLUCOSE,
        Cadence.SPOT,
        (value,),
        moment,
        device_seq=m.sequence_number,
        status=tuple(status),
        extra=extra,
    )
    return [draft]


def _draft(uuid16: int, decoded: object) -> list[_Draft]:
    mappers: dict[int, tuple[type, Callable[[object], list[_Draft]]]] = {
        0x2A5E: (plx.PlxSpotCheck, _plx_spot),  # type: ignore[dict-item]
        0x2A5F: (plx.PlxContinuous, _plx_continuous),  # type: ignore[dict-item]
        0x2A35: (bp.BloodPressureMeasurement, _bp),  # type: ignore[dict-item]
        0x2A1C: (hts.TemperatureMeasurement, _temperature),  # type: ignore[dict-item]
        0x2A37: (hrs.HeartRateMeasurement, _heart_rate),  # type: ignore[dict-item]
        0x2A9D: (wss.WeightMeasurement, _weight),  # type: ignore[dict-item]
        0x2A18: (GlucoseRecord, _glucose),  # type: ignore[dict-item]
    }
    if uuid16 in NOT_READINGS:
        return []
    if uuid16 == 0x2A18 and isinstance(decoded, gls.GlucoseMeasurement):  # noqa: PLR2004
        decoded = GlucoseRecord(decoded)
    if uuid16 not in mappers:
        raise ValueError(f"characteristic 0x{uuid16:04X} does not carry readings")
    expected, mapper = mappers[uuid16]
    if not isinstance(decoded, expected):
        raise TypeError(f"0x{uuid16:04X} expects {expected.__name__}, got {type(decoded).__name__}")
    return mapper(decoded)


def measurement_to_readings(
    uuid16: int,
    decoded: object,
    *,
    device: DeviceIdentity,
    patient: PatientBinding,
    received: HubTime,
    driver_version: str,
    timezone_name: str,
    device_clock_offset_s: float | None,
    device_clock_unset: bool = False,
    session_status: tuple[str, ...] = (),
) -> list[Reading]:
    """The Readings a decoded characteristic value stands for (often one, maybe none).

    Args:
        uuid16: The characteristic the value came from (0x2A35, ...).
        decoded: What ``drivers._codecs.registry.DECODERS[uuid16]`` returned; for glucose
            (0x2A18) a ``GlucoseMeasurement`` or a ``GlucoseRecord`` with its context.
        device: The device identity stamped on each reading.
        patient: The patient binding at capture.
        received: Hub time when the value arrived.
        driver_version: Version of the calling driver.
        timezone_name: IANA zone the device's naive wall clock is read in.
        device_clock_offset_s: Measured device-minus-hub clock offset, if known.
        device_clock_unset: The device said (Current Time) its clock was never set: its
            timestamps are flagged and not trusted, whatever the measurement says.
        session_status: Flags for every reading of the session (``device_clock_set_by_hub``).

    Returns:
        The readings; [] for progress-only values (0x2A36, 0x2A1E), a lone glucose
        context, heart rate 0 (acquiring), or a glucose record without a concentration.

    Raises:
        ValueError: ``uuid16`` is not a measurement characteristic (a wiring bug).
        TypeError: ``decoded`` is not what that characteristic decodes to.
    """
    shared = {
        "device": device,
        "patient": patient,
        "received": received,
        "driver_version": driver_version,
        "device_clock_offset_s": device_clock_offset_s,
        "timezone_name": timezone_name,
    }
    drafts = _draft(uuid16, decoded)
    if device_clock_unset or session_status:
        drafts = [
            replace(
                d,
                device_clock_unset=d.device_clock_unset or device_clock_unset,
                status=(*d.status, *session_status),
            )
            for d in drafts
        ]
    return [_make(draft, shared) for draft in drafts]


def _make(draft: _Draft, shared: dict[str, Any]) -> Reading:
    fields: dict[str, Any] = {
        "kind": draft.kind,
        "cadence": draft.cadence,
        "values": draft.values,
        "device_seq": draft.device_seq,
        "device_clock_unset": draft.device_clock_unset,
        "extra": draft.extra,
    }
    try:
        return make_reading(**shared, **fields, device_time=draft.device_time, status=draft.status)
    except OverflowError:
        # A real date the hub still cannot place, e.g. 9999-12-31 23:00 read in a zone west
        # of UTC, or shifted by a wild clock offset: keep the reading on receipt time.
        status = (*draft.status, "device_time_invalid")
        return make_reading(**shared, **fields, device_time=None, status=status)
