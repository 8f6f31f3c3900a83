"""Codes for each measured quantity: IEEE 11073-10101 (MDC), LOINC and UCUM.

Pure data. Codes are those of ble-profiles.md section 10 (MDC = partition x 65536 + term
code). Following the PHD IG, every Observation carries the MDC code, and a LOINC code as
well when the quantity is a FHIR vital sign. LOINC codes the reference marks
"unverified" are left out rather than guessed: such quantities go out with their MDC code
alone, outside the vital-signs category.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from agent.readings import QUANTITY_UNITS, Kind

MDC_SYSTEM: Final = "urn:iso:std:iso:11073:10101"
LOINC_SYSTEM: Final = "http://loinc.org"
UCUM_SYSTEM: Final = "http://unitsofmeasure.org"
# Our own code system, only for quantities with no verified MDC code (see docs/payloads.md).
WARDLINK_QUANTITY_SYSTEM: Final = "https://fhir.wardlink.org/CodeSystem/quantity"


@dataclass(frozen=True, slots=True)
class Coding:
    """One code in one code system."""

    system: str
    code: str


@dataclass(frozen=True, slots=True)
class Term:
    """How one quantity is coded. ``vital_sign`` means a LOINC vital-signs code is present."""

    codings: tuple[Coding, ...]
    vital_sign: bool


def _mdc(code: int) -> Coding:
    return Coding(MDC_SYSTEM, str(code))


def _loinc(*codes: str) -> tuple[Coding, ...]:
    return tuple(Coding(LOINC_SYSTEM, code) for code in codes)


def _term(mdc: int, *loinc: str) -> Term:
    return Term((_mdc(mdc), *_loinc(*loinc)), vital_sign=bool(loinc))


# The FHIR vital-signs profile needs 2708-6 for SpO2; 59408-5 says "by pulse oximetry".
_SPO2: Final = _term(150456, "2708-6", "59408-5")  # MDC_PULS_OXIM_SAT_O2
_PULSE_OXIMETER: Final = _term(149530, "8867-4")  # MDC_PULS_OXIM_PULS_RATE
_PULSE_NON_INVASIVE: Final = _term(149546, "8867-4")  # MDC_PULS_RATE_NON_INV
_HEART_RATE: Final = _term(147842, "8867-4")  # MDC_ECG_HEART_RATE
BP_PANEL: Final = _term(150020, "85354-9")  # MDC_PRESS_BLD_NONINV, BP panel

_TERMS: Final[dict[str, Term]] = {
    "spo2": _SPO2,
    "perfusion_index": _term(150448),  # MDC_PULS_OXIM_PERF_REL; LOINC unverified
    "systolic": _term(150021, "8480-6"),
    "diastolic": _term(150022, "8462-4"),
    "mean_arterial_pressure": _term(150023, "8478-0"),
    "body_temperature": _term(150364, "8310-5"),  # MDC_TEMP_BODY
    "heart_rate": _HEART_RATE,
    "rr_interval": _term(147240),  # MDC_ECG_TIME_PD_RR_GL
    "body_weight": _term(188736, "29463-7"),  # MDC_MASS_BODY_ACTUAL
    "body_height": _term(188740, "8302-2"),  # MDC_LEN_BODY_ACTUAL
    "bmi": _term(188752, "39156-5"),  # MDC_RATIO_MASS_BODY_LEN_SQ
    # No verified MDC code in our reference: a local code, never a guessed one.
    "energy_expended": Term(
        (Coding(WARDLINK_QUANTITY_SYSTEM, "energy_expended"),), vital_sign=False
    ),
}

# Capillary whole blood (the glucometer default); LOINC differs for mass and moles.
# Glucose is not a vital sign, but the LOINC code still helps consumers.
_GLUCOSE_BY_UNIT: Final[dict[str, Term]] = {
    "mg/dL": Term((_mdc(160184), *_loinc("41653-7")), vital_sign=False),
    "mmol/L": Term((_mdc(160184), *_loinc("14743-9")), vital_sign=False),
}

# Sub-quantities of the BP panel: sent as components of one Observation.
BP_COMPONENTS: Final = ("systolic", "diastolic", "mean_arterial_pressure")


def is_ucum_unit(name: str, unit: str) -> bool:
    """Whether ``unit`` is one of the UCUM units QUANTITY_UNITS allows for ``name``."""
    return unit in QUANTITY_UNITS.get(name, frozenset())


def term_for(kind: Kind, name: str, unit: str) -> Term:
    """The codes for quantity ``name`` in ``unit`` within a reading of ``kind``.

    A quantity we have no code for gets a local code (its name) rather than an error:
    a reading is never dropped for want of a code.
    """
    if name == "pulse_rate":
        # PHD IG: the same LOINC (8867-4) but a different MDC code per source device.
        return _PULSE_OXIMETER if kind is Kind.SPO2 else _PULSE_NON_INVASIVE
    if name == "glucose" and unit in _GLUCOSE_BY_UNIT:
        return _GLUCOSE_BY_UNIT[unit]
    known = _TERMS.get(name)
    if known is not None:
        return known
    return Term((Coding(WARDLINK_QUANTITY_SYSTEM, name),), vital_sign=False)


# IEEE 11073-20601 device specialisations (MDC_PART_INFRA = 8): PHD IG Device.type.
DEVICE_TYPES: Final[dict[Kind, int]] = {
    Kind.SPO2: 8 * 65536 + 4100,  # MDC_DEV_SPEC_PROFILE_PULS_OXIM
    Kind.BLOOD_PRESSURE: 8 * 65536 + 4103,  # MDC_DEV_SPEC_PROFILE_BP
    Kind.BODY_TEMPERATURE: 8 * 65536 + 4104,  # MDC_DEV_SPEC_PROFILE_TEMP
    Kind.BODY_WEIGHT: 8 * 65536 + 4111,  # MDC_DEV_SPEC_PROFILE_SCALE
    Kind.GLUCOSE: 8 * 65536 + 4113,  # MDC_DEV_SPEC_PROFILE_GLUCOSE
}
GATEWAY_DEVICE_TYPE: Final = 531981  # MDC_MOC_VMS_MDS_AHD: the PHG (PHD IG PhgDevice)

# The quantity that carries a reading's own identifier (the others get derived ones).
PRIMARY_QUANTITY: Final[dict[Kind, str]] = {
    Kind.SPO2: "spo2",
    Kind.BLOOD_PRESSURE: "systolic",
    Kind.BODY_TEMPERATURE: "body_temperature",
    Kind.HEART_RATE: "heart_rate",
    Kind.BODY_WEIGHT: "body_weight",
    Kind.GLUCOSE: "glucose",
}
