"""MQTT topic names and the small JSON payloads of the hub's retained topics.

Pure: no I/O, no clock. Callers pass the times in. Nothing here may carry a patient
identifier or a reading value (DESIGN.md, Security): status, info and health are read by
operations staff and fleet dashboards, not by clinicians.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

JSON_CONTENT_TYPE: Final = "application/json"

# MQTT 5 reason codes a broker sends in PUBACK and CONNACK (MQTT 5.0 section 2.4), so a
# rejection can be stored and reported as "0x87 Not authorized" rather than a bare number.
REASON_NAMES: Final[dict[int, str]] = {
    0x00: "Success",
    0x10: "No matching subscribers",
    0x80: "Unspecified error",
    0x81: "Malformed Packet",
    0x82: "Protocol Error",
    0x83: "Implementation specific error",
    0x84: "Unsupported Protocol Version",
    0x85: "Client Identifier not valid",
    0x86: "Bad User Name or Password",
    0x87: "Not authorized",
    0x88: "Server unavailable",
    0x89: "Server busy",
    0x8A: "Banned",
    0x8C: "Bad authentication method",
    0x90: "Topic Name invalid",
    0x91: "Packet Identifier in use",
    0x95: "Packet too large",
    0x97: "Quota exceeded",
    0x99: "Payload format invalid",
    0x9A: "Retain not supported",
    0x9B: "QoS not supported",
    0x9C: "Use another server",
    0x9D: "Server moved",
    0x9F: "Connection rate exceeded",
}

# CONNACK codes that mean "these credentials or this client will not be let in": retrying
# soon cannot help, so the publisher waits the maximum backoff (STYLE.md section 5).
AUTH_REFUSALS: Final = frozenset({0x85, 0x86, 0x87, 0x8A, 0x8C})


def reason_text(code: int) -> str:
    """``0x87 Not authorized``: the code in hex and its MQTT 5 name."""
    return f"0x{code:02X} {REASON_NAMES.get(code, 'Unknown reason')}"


def utc_iso(moment: datetime) -> str:
    """An ISO 8601 UTC timestamp with a ``Z``, as dashboards expect."""
    return moment.isoformat().replace("+00:00", "Z")


def encode_json(document: Mapping[str, Any]) -> bytes:
    """Compact, key-sorted JSON bytes (stable, so retained payloads compare equal)."""
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True, slots=True)
class HubTopics:
    """Every topic of one hub: ``{prefix}/{hub_id}/...`` (DESIGN.md, MQTT topics)."""

    prefix: str
    hub_id: str

    @property
    def base(self) -> str:
        """``{prefix}/{hub_id}``."""
        return f"{self.prefix}/{self.hub_id}"

    @property
    def status(self) -> str:
        """Retained online/offline; also the Last Will topic."""
        return f"{self.base}/status"

    @property
    def info(self) -> str:
        """Retained versions, config hash and bound devices."""
        return f"{self.base}/info"

    @property
    def health(self) -> str:
        """Retained periodic health report."""
        return f"{self.base}/health"

    @property
    def readings(self) -> str:
        """Batches of readings, QoS 1, never retained."""
        return f"{self.base}/readings"

    def device_status(self, device_id: str) -> str:
        """Retained availability of one device."""
        return f"{self.base}/devices/{device_id}/status"


def online_payload(since: datetime, now: datetime) -> bytes:
    """The status published on every connect."""
    return encode_json({"state": "online", "since": utc_iso(since), "ts": utc_iso(now)})


def offline_payload(reason: str, now: datetime | None = None) -> bytes:
    """Offline status: the Last Will (no time: it is set before connecting) or shutdown."""
    document: dict[str, Any] = {"state": "offline", "reason": reason}
    if now is not None:
        document["ts"] = utc_iso(now)
    return encode_json(document)


def info_payload(info: Mapping[str, Any], paho_version: str) -> bytes:
    """The retained info document: what the app gave, plus the paho version.

    Only device ids and drivers are expected under ``devices``; any other key of a device
    entry is dropped here so a patient identifier can never leak through it.
    """
    document = dict(info)
    document["paho"] = paho_version
    devices = document.get("devices", [])
    document["devices"] = [{"id": d.get("id"), "driver": d.get("driver")} for d in devices]
    return encode_json(document)
