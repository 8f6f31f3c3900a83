"""Wire formats for readings: FHIR R4 (default) and compact JSON.

Pure builders: readings in, bytes out. The publisher calls ``encode_batch`` with one
MQTT message's worth of readings.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """One MQTT message: its payload and how to announce it (MQTT 5 properties)."""

    payload: bytes
    content_type: str
    user_properties: tuple[tuple[str, str], ...] = ()
