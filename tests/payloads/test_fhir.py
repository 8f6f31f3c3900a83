"""FHIR R4 payloads: golden Bundles per kind, R4(B) model validation, IG and vital-signs rules."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.observation import Observation

from agent.payloads import decode_payload, encode_batch
from agent.payloads.fhir import BTMAC_SYSTEM, GATEWAY_EXTENSION, READING_EXTENSION
from agent.payloads.terminology import (
    LOINC_SYSTEM,
    MDC_SYSTEM,
    UCUM_SYSTEM,
    WARDLINK_QUANTITY_SYSTEM,
)
from agent.readings import Kind, Quantity
from tests.payloads.factory import (
    CONTEXT,
    RECEIVED_UTC,
    hub_time,
    reading_of,
    spo2_stream,
    stored,
)
from tests.payloads.golden import assert_matches_golden

Json = dict[str, Any]


OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
# LOINC codes of the FHIR R4 vital-signs profiles (hl7.org/fhir/R4/observation-vitalsigns).
VITAL_SIGNS_LOINC = {
    "85353-1",
    "9279-1",
    "8867-4",
    "2708-6",
    "59408-5",
    "8310-5",
    "8302-2",
    "9843-4",
    "29463-7",
    "39156-5",
    "85354-9",
    "8480-6",
    "8462-4",
}


def bundle_for(*readings: Any, now: Any = None) -> Json:
    batch = [r if hasattr(r, "seq") else stored(r, 1001 + i) for i, r in enumerate(readings)]
    encoded = encode_batch(batch, now or hub_time(), fmt="fhir", context=CONTEXT)
    document = decode_payload(encoded)
    assert isinstance(document, dict)
    return document


def observations(bundle: Json) -> list[Json]:
    return [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    ]


def codes(concept: Json, system: str) -> set[str]:
    return {c["code"] for c in concept["coding"] if c["system"] == system}


def reading_ext(observation: Json) -> dict[str, list[Any]]:
    ext = next(e for e in observation["extension"] if e["url"] == READING_EXTENSION)
    parts: dict[str, list[Any]] = {}
    for part in ext["extension"]:
        value = next(v for k, v in part.items() if k.startswith("value"))
        parts.setdefault(part["url"], []).append(value)
    return parts


@pytest.mark.parametrize("kind", list(Kind))
def test_golden_bundle_per_kind(kind: Kind) -> None:
    assert_matches_golden(f"fhir_{kind.value}", bundle_for(reading_of(kind)))


@pytest.mark.parametrize("kind", list(Kind))
def test_bundle_validates_against_fhir_models(kind: Kind) -> None:
    bundle = bundle_for(reading_of(kind))
    Bundle.model_validate(bundle)
    for entry in bundle["entry"]:
        model = Observation if entry["resource"]["resourceType"] == "Observation" else Device
        model.model_validate(entry["resource"])
    assert bundle["type"] == "transaction"


@pytest.mark.parametrize("kind", list(Kind))
def test_vital_signs_profile_rules(kind: Kind) -> None:
    for obs in observations(bundle_for(reading_of(kind))):
        assert obs["status"] == "final"
        # PHD IG: every Observation has its MDC code; energy expended has no verified
        # one in our reference and goes out with our local code instead.
        local = codes(obs["code"], WARDLINK_QUANTITY_SYSTEM)
        assert codes(obs["code"], MDC_SYSTEM) or local == {"energy_expended"}
        assert obs["subject"]["identifier"] == {
            "system": CONTEXT.patient_id_system,
            "value": "patient-0042",
        }
        assert obs["effectiveDateTime"].endswith("Z")
        # The FHIR vital-signs profile: these LOINC codes require the vital-signs category
        # (with this exact system); nothing else may claim it.
        is_vital = bool(codes(obs["code"], LOINC_SYSTEM) & VITAL_SIGNS_LOINC)
        categories = {
            (coding["system"], coding["code"])
            for category in obs.get("category", [])
            for coding in category["coding"]
        }
        assert (categories == {(OBSERVATION_CATEGORY, "vital-signs")}) is is_vital, obs["code"]
        if not is_vital:
            continue
        quantities = [c["valueQuantity"] for c in obs.get("component", [])]
        quantities += [obs["valueQuantity"]] if "valueQuantity" in obs else []
        assert quantities
        for quantity in quantities:
            assert quantity["system"] == UCUM_SYSTEM
            assert quantity["code"] == quantity["unit"]


def test_spo2_carries_both_loinc_codes_and_separate_pulse() -> None:
    spo2, pulse, perfusion = observations(bundle_for(reading_of(Kind.SPO2)))
    assert codes(spo2["code"], LOINC_SYSTEM) == {"2708-6", "59408-5"}
    assert codes(spo2["code"], MDC_SYSTEM) == {"150456"}
    assert spo2["valueQuantity"]["value"] == 97
    assert codes(pulse["code"], MDC_SYSTEM) == {"149530"}  # from an oximeter
    assert codes(pulse["code"], LOINC_SYSTEM) == {"8867-4"}
    # Perfusion index has no verified LOINC code: MDC only, not claimed as a vital sign.
    assert "category" not in perfusion
    assert codes(perfusion["code"], LOINC_SYSTEM) == set()


def test_blood_pressure_is_one_panel_with_components_plus_pulse() -> None:
    panel, pulse = observations(bundle_for(reading_of(Kind.BLOOD_PRESSURE)))
    assert codes(panel["code"], LOINC_SYSTEM) == {"85354-9"}
    assert "valueQuantity" not in panel
    component_loinc = [codes(c["code"], LOINC_SYSTEM) for c in panel["component"]]
    assert component_loinc == [{"8480-6"}, {"8462-4"}, {"8478-0"}]
    assert [c["valueQuantity"]["value"] for c in panel["component"]] == [128, 82, 97.3]
    assert codes(pulse["code"], MDC_SYSTEM) == {"149546"}  # from a cuff, not an oximeter
    assert reading_ext(panel)["status"] == ["irregular_pulse"]


def test_special_value_becomes_data_absent_reason_never_a_number() -> None:
    reading = reading_of(
        Kind.BLOOD_PRESSURE,
        values=(
            Quantity("systolic", None, "mm[Hg]", "nan"),
            Quantity("diastolic", 80.0, "mm[Hg]"),
        ),
    )
    temperature = reading_of(
        Kind.BODY_TEMPERATURE, values=(Quantity("body_temperature", None, "Cel", "NRes"),)
    )
    (panel,) = observations(bundle_for(reading))
    systolic = panel["component"][0]
    assert "valueQuantity" not in systolic
    assert systolic["dataAbsentReason"]["coding"][0]["code"] == "not-a-number"
    (temp,) = observations(bundle_for(temperature))
    assert "valueQuantity" not in temp
    assert temp["dataAbsentReason"]["coding"][0]["code"] == "error"
    Observation.model_validate(temp)


def test_body_height_in_metres_is_sent_in_centimetres() -> None:
    _, height, _ = observations(bundle_for(reading_of(Kind.BODY_WEIGHT)))
    assert height["valueQuantity"] == {
        "value": 175,
        "unit": "cm",
        "system": UCUM_SYSTEM,
        "code": "cm",
    }


def test_same_reading_twice_gives_same_identifiers_and_conditional_creates() -> None:
    reading = reading_of(Kind.SPO2)
    first = bundle_for(stored(reading, 7))
    later = bundle_for(
        stored(reading_of(Kind.BLOOD_PRESSURE), 6),
        stored(reading, 7),
        now=hub_time(RECEIVED_UTC + timedelta(hours=2), mono_ns=9 * 10**12),
    )

    def creates(bundle: Json) -> dict[str, str]:
        return {
            e["resource"]["identifier"][0]["value"]: e["request"]["ifNoneExist"]
            for e in bundle["entry"]
            if e["request"]["method"] == "POST"
        }

    again = creates(later)
    assert creates(first).items() <= again.items()
    assert f"urn:uuid:{reading.reading_id}" in creates(first)
    for identifier, query in again.items():
        assert query == f"identifier=urn:ietf:rfc:3986|{identifier}"
    assert len(again) == len(set(again)) == 3 + 2


def test_devices_are_conditionally_updated_and_referenced() -> None:
    bundle = bundle_for(*spo2_stream(3), stored(reading_of(Kind.GLUCOSE), 9000))
    devices = {
        e["fullUrl"]: e for e in bundle["entry"] if e["resource"]["resourceType"] == "Device"
    }
    assert len(devices) == 3  # gateway + oximeter + glucometer, each once
    for entry in devices.values():
        assert entry["request"]["method"] == "PUT"
        assert entry["request"]["url"].startswith("Device?identifier=")
    gateway = next(
        url for url, e in devices.items() if codes(e["resource"]["type"], MDC_SYSTEM) == {"531981"}
    )
    for obs in observations(bundle):
        assert obs["device"]["reference"] in devices
        assert obs["device"]["reference"] != gateway
        gateway_ext = next(e for e in obs["extension"] if e["url"] == GATEWAY_EXTENSION)
        assert gateway_ext["valueReference"]["reference"] == gateway
    oximeter = next(e["resource"] for e in devices.values() if e["resource"].get("modelNumber"))
    assert {"system": BTMAC_SYSTEM, "value": "00-1C-05-AA-BB-CC"}.items() <= next(
        i for i in oximeter["identifier"] if i["system"] == BTMAC_SYSTEM
    ).items()


def test_time_provenance_is_carried() -> None:
    (panel, _) = observations(bundle_for(reading_of(Kind.BLOOD_PRESSURE)))
    ext = reading_ext(panel)
    assert ext["timeSource"] == ["device_corrected"]
    assert ext["deviceTime"] == ["2026-11-27T09:28:00"]
    assert ext["deviceTimeZone"] == ["Europe/London"]
    assert ext["deviceClockOffsetS"] == [3.0]
    assert ext["hubReceipt"] == ["2026-11-27T09:30:15.250Z"]
    assert ext["hubClockSynced"] == [True]
    assert ext["seq"] == [1001]
    assert ext["bindingVersion"] == [3]
    # Device said 09:28:00 (GMT in November), 3 s fast: effective 09:27:57 UTC.
    assert panel["effectiveDateTime"] == "2026-11-27T09:27:57.000Z"


def test_reading_captured_unsynced_is_restamped_in_fhir() -> None:
    # Captured while the hub thought it was 1970; synced 90 s (monotonic) later.
    captured = hub_time(hub_time().utc.replace(year=1970), mono_ns=10**9, synced=False)
    reading = reading_of(Kind.HEART_RATE, received=captured)
    now = hub_time(RECEIVED_UTC, mono_ns=91 * 10**9)
    heart_rate, *_ = observations(bundle_for(reading, now=now))
    assert heart_rate["effectiveDateTime"] == "2026-11-27T09:28:45.250Z"
    ext = reading_ext(heart_rate)
    assert ext["timeFlag"] == ["hub_clock_unsynced", "restamped"]
    assert ext["hubClockSynced"] == [False]
    assert ext["recordedReceipt"] == ["1970-11-27T09:30:15.250Z"]
    assert ext["monotonicNs"] == [str(10**9)]


def test_reading_without_its_main_quantity_still_uses_its_reading_id() -> None:
    reading = reading_of(Kind.BLOOD_PRESSURE, values=(Quantity("pulse_rate", 66.0, "/min"),))
    weight = reading_of(
        Kind.BODY_WEIGHT,
        values=(Quantity("bmi", 22.0, "kg/m2"), Quantity("body_height", 1.8, "m")),
    )
    (pulse,) = observations(bundle_for(reading))
    assert pulse["identifier"][0]["value"] == f"urn:uuid:{reading.reading_id}"
    bmi, height = observations(bundle_for(weight))
    assert bmi["identifier"][0]["value"] == f"urn:uuid:{weight.reading_id}"
    assert reading_ext(height)["readingId"] == [f"urn:uuid:{weight.reading_id}"]
