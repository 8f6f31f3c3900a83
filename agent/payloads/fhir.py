"""FHIR R4 transaction Bundles of Observations, following the Personal Health Device IG.

Pure: readings in, a JSON-ready dict out. One MQTT message is one Bundle of type
``transaction``: a conditional update (PUT Device?identifier=...) for the hub gateway and
each medical device, then one conditional create (POST, ``ifNoneExist``) per
Observation, so a reading published twice is created once. docs/payloads.md lists the
mapping, our extensions and where we depart from the IG.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from agent.payloads.context import (
    WARDLINK_FHIR_BASE,
    PayloadContext,
    compact_number,
    format_instant,
    published_time,
)
from agent.payloads.terminology import (
    BP_COMPONENTS,
    BP_PANEL,
    DEVICE_TYPES,
    GATEWAY_DEVICE_TYPE,
    MDC_SYSTEM,
    PRIMARY_QUANTITY,
    UCUM_SYSTEM,
    Term,
    is_ucum_unit,
    term_for,
)
from agent.readings import DeviceIdentity, Kind, Quantity, Reading, StoredReading

if TYPE_CHECKING:
    from collections.abc import Sequence

    from agent.clock import HubTime, PublishedTime

Json = dict[str, Any]

RFC3986_SYSTEM: Final = "urn:ietf:rfc:3986"
READING_EXTENSION: Final = f"{WARDLINK_FHIR_BASE}/StructureDefinition/reading"
DEVICE_ID_SYSTEM: Final = f"{WARDLINK_FHIR_BASE}/Id/device"
HUB_ID_SYSTEM: Final = f"{WARDLINK_FHIR_BASE}/Id/hub"
GATEWAY_EXTENSION: Final = "http://hl7.org/fhir/StructureDefinition/observation-gatewayDevice"
SYSID_SYSTEM: Final = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680"  # PHD IG: EUI-64
BTMAC_SYSTEM: Final = "http://hl7.org/fhir/sid/eui-48/bluetooth"
_ID_TYPE_SYSTEM: Final = "http://hl7.org/fhir/uv/phd/CodeSystem/ContinuaDeviceIdentifiers"
_CATEGORY_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
_ABSENT_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
# Fixed namespace for the derived (UUIDv5) ids of Devices and secondary Observations.
_NAMESPACE: Final = uuid.UUID("6f1c2a4e-5b7d-4e8f-9a0b-1c2d3e4f5a6b")
_MAC: Final = re.compile(r"^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$")

# IEEE 11073 special values -> FHIR data-absent-reason (as the PHD IG maps them).
_ABSENT_REASONS: Final = {
    "nan": "not-a-number",
    "nres": "error",
    "+inf": "positive-infinity",
    "-inf": "negative-infinity",
}

_RFC3986_QUOTED: Final = quote(RFC3986_SYSTEM, safe=":/")
_VITAL_SIGNS: Final = [{"coding": [{"system": _CATEGORY_SYSTEM, "code": "vital-signs"}]}]


def build_bundle(batch: Sequence[StoredReading], now: HubTime, context: PayloadContext) -> Json:
    """The transaction Bundle for one message; ``now`` is when it is built (for re-stamping)."""
    gateway_url = _urn(uuid.uuid5(_NAMESPACE, f"hub:{context.hub_id}"))
    entries = [_gateway_entry(context, gateway_url)]
    device_urls: dict[str, str] = {}
    for stored in batch:
        device = stored.reading.device
        if device.device_id not in device_urls:
            url = _urn(uuid.uuid5(_NAMESPACE, f"device:{context.hub_id}:{device.device_id}"))
            device_urls[device.device_id] = url
            entries.append(_device_entry(device, stored.reading.kind, context, url))
    for stored in batch:
        device_url = device_urls[stored.reading.device.device_id]
        refs = _Refs(device_url, gateway_url, context.patient_id_system)
        entries.extend(_observation_entries(stored, now, context, refs))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


class _Refs:
    """The fullUrls an Observation points at."""

    __slots__ = ("device", "gateway", "patient_system")

    def __init__(self, device: str, gateway: str, patient_system: str) -> None:
        self.device = device
        self.gateway = gateway
        self.patient_system = patient_system


def _urn(value: uuid.UUID) -> str:
    return f"urn:uuid:{value}"


def _search_token(system: str, value: str) -> str:
    """``identifier=system|value`` with both parts percent-encoded for a URL."""
    return f"identifier={quote(system, safe=':/')}|{quote(value, safe=':/')}"


def _typed_identifier(code: str, system: str, value: str) -> Json:
    return {
        "type": {"coding": [{"system": _ID_TYPE_SYSTEM, "code": code}]},
        "system": system,
        "value": value,
    }


def _device_entry(device: DeviceIdentity, kind: Kind, context: PayloadContext, url: str) -> Json:
    """A PHD Device, conditionally updated on our stable hub/device identifier."""
    own_id = f"{context.hub_id}/{device.device_id}"
    identifiers: list[Json] = [{"system": DEVICE_ID_SYSTEM, "value": own_id}]
    if device.system_id:
        identifiers.append(_typed_identifier("SYSID", SYSID_SYSTEM, device.system_id))
    if device.address and _MAC.match(device.address):
        mac = device.address.upper().replace(":", "-")
        identifiers.append(_typed_identifier("BTMAC", BTMAC_SYSTEM, mac))
    resource: Json = {"resourceType": "Device", "identifier": identifiers}
    optional = {
        "manufacturer": device.manufacturer,
        "modelNumber": device.model,
        "serialNumber": device.serial_number,
    }
    resource.update({key: value for key, value in optional.items() if value})
    if kind in DEVICE_TYPES:
        resource["type"] = {"coding": [{"system": MDC_SYSTEM, "code": str(DEVICE_TYPES[kind])}]}
    if device.firmware:
        resource["version"] = [{"type": {"text": "firmware"}, "value": device.firmware}]
    return _conditional_put(resource, url, DEVICE_ID_SYSTEM, own_id)


def _gateway_entry(context: PayloadContext, url: str) -> Json:
    """The hub as the PHD IG's gateway (PhgDevice)."""
    identifiers: list[Json] = [{"system": HUB_ID_SYSTEM, "value": context.hub_id}]
    if context.hub_system_id:
        identifiers.append(_typed_identifier("SYSID", SYSID_SYSTEM, context.hub_system_id))
    resource: Json = {
        "resourceType": "Device",
        "identifier": identifiers,
        "type": {"coding": [{"system": MDC_SYSTEM, "code": str(GATEWAY_DEVICE_TYPE)}]},
        "version": [{"type": {"text": "wardlink"}, "value": context.agent_version}],
    }
    if context.hub_serial:
        resource["serialNumber"] = context.hub_serial
    return _conditional_put(resource, url, HUB_ID_SYSTEM, context.hub_id)


def _conditional_put(resource: Json, url: str, system: str, value: str) -> Json:
    request = {"method": "PUT", "url": f"Device?{_search_token(system, value)}"}
    return {"fullUrl": url, "resource": resource, "request": request}


def _observation_entries(
    stored: StoredReading, now: HubTime, context: PayloadContext, refs: _Refs
) -> list[Json]:
    """One Observation per measured thing: the BP panel is one, its pulse another."""
    reading = stored.reading
    times = published_time(reading, now)
    primary = PRIMARY_QUANTITY[reading.kind]
    if reading.kind is Kind.BLOOD_PRESSURE:
        groups = _bp_groups(reading.values)
    else:
        groups = [(q.name, [q]) for q in reading.values]
    if not groups:
        # Nothing measured (all fields absent): still say a reading happened.
        groups = [(primary, [])]
    # What every Observation of this reading repeats is worked out once per reading.
    effective = format_instant(times.effective)
    head, tail = _reading_parts(stored, times, context)
    entries = []
    for name, quantities in groups:
        # The reading's own id goes to its main quantity, or to the first if that is absent.
        is_primary = name == primary or (name == groups[0][0] and primary not in dict(groups))
        obs_id = reading.reading_id if is_primary else uuid.uuid5(reading.reading_id, name)
        resource = _observation(reading, name, quantities, refs)
        resource["effectiveDateTime"] = effective
        parts = head + tail if is_primary else [*head, _reading_id_part(reading), *tail]
        resource["extension"] = [
            {"url": GATEWAY_EXTENSION, "valueReference": {"reference": refs.gateway}},
            {"url": READING_EXTENSION, "extension": [{"url": u, t: v} for u, t, v in parts]},
        ]
        identifier = f"urn:uuid:{obs_id}"
        resource["identifier"] = [{"system": RFC3986_SYSTEM, "value": identifier}]
        request = {
            "method": "POST",
            "url": "Observation",
            # A urn:uuid needs no percent-encoding (hex digits, '-' and ':').
            "ifNoneExist": f"identifier={_RFC3986_QUOTED}|{identifier}",
        }
        entries.append({"fullUrl": identifier, "resource": resource, "request": request})
    return entries


def _bp_groups(values: tuple[Quantity, ...]) -> list[tuple[str, list[Quantity]]]:
    panel = [q for q in values if q.name in BP_COMPONENTS]
    rest = [(q.name, [q]) for q in values if q.name not in BP_COMPONENTS]
    return [("systolic", panel), *rest] if panel else rest


def _observation(reading: Reading, name: str, quantities: list[Quantity], refs: _Refs) -> Json:
    is_panel = reading.kind is Kind.BLOOD_PRESSURE and name == "systolic"
    unit = quantities[0].unit if quantities else ""
    term = BP_PANEL if is_panel else term_for(reading.kind, name, unit)
    resource: Json = {"resourceType": "Observation", "status": "final"}
    if term.vital_sign:
        resource["category"] = _VITAL_SIGNS
    resource["code"] = _codeable(term)
    resource["subject"] = {
        "identifier": {"system": refs.patient_system, "value": reading.patient.patient_id}
    }
    resource["device"] = {"reference": refs.device}
    if is_panel:
        resource["component"] = [_component(reading.kind, q) for q in quantities]
    elif quantities:
        resource.update(_value(quantities[0]))
    else:
        resource["dataAbsentReason"] = _absent("unknown")
    return resource


def _codeable(term: Term) -> Json:
    return {"coding": [{"system": c.system, "code": c.code} for c in term.codings]}


def _component(kind: Kind, quantity: Quantity) -> Json:
    return {"code": _codeable(term_for(kind, quantity.name, quantity.unit)), **_value(quantity)}


def _absent(code: str) -> Json:
    return {"coding": [{"system": _ABSENT_SYSTEM, "code": code}]}


def _value(quantity: Quantity) -> Json:
    """A UCUM valueQuantity, or a dataAbsentReason for a special value (never a number)."""
    if quantity.value is None:
        special = (quantity.special or "").strip().lower()
        return {"dataAbsentReason": _absent(_ABSENT_REASONS.get(special, "unknown"))}
    value, unit = compact_number(quantity.value), quantity.unit
    if quantity.name == "body_height" and unit == "m":
        # The vital-signs profile allows cm and [in_i] for body height, not m.
        value, unit = compact_number(round(quantity.value * 100, 9)), "cm"
    result: Json = {"value": value, "unit": unit}
    if unit == "cm" or is_ucum_unit(quantity.name, unit):
        result.update(system=UCUM_SYSTEM, code=unit)
    return {"valueQuantity": result}


_Part = tuple[str, str, Any]


def _reading_id_part(reading: Reading) -> _Part:
    """On a secondary Observation: the id of the reading it came from."""
    return ("readingId", "valueUri", f"urn:uuid:{reading.reading_id}")


def _reading_parts(
    stored: StoredReading, times: PublishedTime, context: PayloadContext
) -> tuple[list[_Part], list[_Part]]:
    """Our complex extension's parts (seq, binding version, where the time came from).

    Returned as the parts before and after where a secondary Observation puts its
    ``readingId``, so one reading's Observations share the work.
    """
    reading = stored.reading
    receipt = format_instant(times.receipt)
    head: list[_Part] = [
        ("seq", "valueInteger", stored.seq),
        ("bindingVersion", "valueInteger", reading.patient.binding_version),
        ("timeSource", "valueCode", times.time_source.value),
        *(("timeFlag", "valueCode", flag) for flag in times.flags),
        ("hubReceipt", "valueInstant", receipt),
        ("hubClockSynced", "valueBoolean", reading.received.clock_synced),
        *(("status", "valueCode", status) for status in reading.status),
        ("driver", "valueString", f"{reading.device.driver} {reading.driver_version}"),
    ]
    tail: list[_Part] = []
    if not reading.received.clock_synced:
        tail += [
            ("recordedReceipt", "valueInstant", format_instant(reading.received.utc)),
            ("monotonicNs", "valueString", str(reading.received.monotonic_ns)),
            ("bootId", "valueString", reading.received.boot_id),
        ]
    if reading.device_time is not None:
        tail += [
            ("deviceTime", "valueString", reading.device_time),
            ("deviceTimeZone", "valueString", context.timezone_name),
        ]
    if reading.device_clock_offset_s is not None:
        tail.append(("deviceClockOffsetS", "valueDecimal", reading.device_clock_offset_s))
    if reading.device_seq is not None:
        tail.append(("deviceSeq", "valueInteger", reading.device_seq))
    tail += [("extra", "valueString", f"{k}={v}") for k, v in sorted(reading.extra.items())]
    return head, tail
