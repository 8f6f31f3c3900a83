"""What both wire formats share: the hub's facts and how times and numbers are written.

Pure: no I/O and no clock; the publisher passes ``now`` in.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final, Literal

from agent.clock import HubTime, PublishedTime, restamp

if TYPE_CHECKING:
    from agent.readings import Reading

WARDLINK_FHIR_BASE: Final = "https://fhir.wardlink.org"
DEFAULT_PATIENT_ID_SYSTEM: Final = f"{WARDLINK_FHIR_BASE}/Id/patient"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
_UUID_BASE64_CHARS: Final = 22
_UUID_BYTES: Final = 16
_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")


@dataclass(frozen=True, slots=True)
class PayloadContext:
    """Facts about this hub that every message carries (the PHD IG's gateway Device).

    Attributes:
        hub_id: The configured hub id (also in the topic).
        agent_version: The agent's version, reported as the gateway's software version.
        hub_serial: The hub's hardware serial number, if known.
        hub_system_id: The hub's EUI-64 system id ("FE-ED-AB-EE-DE-AD-77-C3"), if known.
        timezone_name: The IANA zone device-local times were read in (hub config).
        patient_id_system: The identifier system of the patient id in the binding.
        compression: "deflate" compresses a payload (zlib format) when that makes it
            smaller, and says so in a user property; "none" never does.
    """

    hub_id: str
    agent_version: str
    hub_serial: str | None = None
    hub_system_id: str | None = None
    timezone_name: str = "UTC"
    patient_id_system: str = DEFAULT_PATIENT_ID_SYSTEM
    compression: Literal["none", "deflate"] = "none"


def published_time(reading: Reading, now: HubTime) -> PublishedTime:
    """The reading's times as they go on the wire (re-stamped if the clock synced since)."""
    return restamp(
        received=reading.received,
        effective_time=reading.effective_time,
        time_source=reading.time_source,
        time_flags=reading.time_flags,
        now=now,
    )


def format_instant(moment: datetime) -> str:
    """UTC with millisecond precision and an explicit ``Z`` offset (FHIR instant)."""
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.removesuffix("+00:00") + "Z"


def epoch_ms(moment: datetime) -> int:
    """Whole milliseconds since 1970-01-01T00:00:00Z (rounded down)."""
    if moment.tzinfo is None:
        moment = moment.astimezone(UTC)  # a naive time is local, as astimezone says
    # Aware datetimes subtract in UTC; floor division by 1 ms rounds down, like // 1000.
    return (moment - _EPOCH) // _ONE_MS


def compact_number(value: float) -> int | float:
    """An integral float as an int (``97`` not ``97.0``): same value, fewer bytes."""
    if type(value) is int:
        return value  # Python 3.11's int has no is_integer()
    return int(value) if value.is_integer() else value


def ids_base64url(reading_ids: list[bytes]) -> list[str]:
    """``id_base64url`` of each id, in one base64 call for a message's ids."""
    if set(map(len, reading_ids)) != {_UUID_BYTES}:
        return [id_base64url(reading_id) for reading_id in reading_ids]
    # Each id padded to 18 bytes (a multiple of 3) encodes to 24 characters on its own,
    # the first 22 of them what the id alone encodes to (the padding bits are zero).
    packed = b"\0\0".join(reading_ids) + b"\0\0"
    text = binascii.b2a_base64(packed, newline=False).translate(_URLSAFE).decode("ascii")
    return [text[start : start + _UUID_BASE64_CHARS] for start in range(0, len(text), 24)]


def id_base64url(reading_id: bytes) -> str:
    """A reading id's 16 bytes as 22 base64url characters (no padding)."""
    # 16 bytes are always 22 characters and "==": binascii avoids base64's wrappers.
    encoded = binascii.b2a_base64(reading_id, newline=False)
    return encoded[:_UUID_BASE64_CHARS].translate(_URLSAFE).decode("ascii")
