"""Wire formats for readings: FHIR R4 (default) and compact JSON.

Pure builders: readings in, bytes out. The publisher gets its encoder once from
``make_encoder(fmt, context)`` and calls it with one MQTT message's worth of readings
and the current hub time (times captured before the hub clock synced are re-stamped
here, at publish time; see agent.clock.restamp).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Final, Literal

from agent.payloads.compact import JSON, compact_json
from agent.payloads.context import PayloadContext
from agent.payloads.fhir import build_bundle

if TYPE_CHECKING:
    from agent.clock import HubTime
    from agent.readings import StoredReading

__all__ = [
    "CONTENT_TYPES",
    "EncodedBatch",
    "Encoder",
    "PayloadContext",
    "decode_payload",
    "encode_batch",
    "make_encoder",
]

PayloadFormat = Literal["fhir", "compact"]

CONTENT_TYPES: Final[dict[str, str]] = {
    "fhir": "application/fhir+json; fhirVersion=4.0",
    "compact": "application/vnd.wardlink.compact+json; version=1",
}
# Announced as the MQTT 5 user property "content-encoding" when the payload is compressed.
CONTENT_ENCODING_DEFLATE: Final = "deflate"


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """One MQTT message: its payload and how to announce it (MQTT 5 properties)."""

    payload: bytes
    content_type: str
    user_properties: tuple[tuple[str, str], ...] = ()


Encoder = Callable[["Sequence[StoredReading]", "HubTime"], EncodedBatch]


def encode_batch(
    batch: Sequence[StoredReading],
    now: HubTime,
    *,
    fmt: PayloadFormat,
    context: PayloadContext,
) -> EncodedBatch:
    """Encode one message's readings.

    Args:
        batch: The readings, in outbox order; at least one.
        now: The hub time at publishing (used to re-stamp pre-sync times).
        fmt: "fhir" (a FHIR R4 transaction Bundle) or "compact".
        context: The hub's facts.

    Returns:
        The payload with its content type and user properties: ``wardlink-format``,
        ``wardlink-count``, ``wardlink-seq-first``/``-last``, and ``content-encoding``
        when compressed.

    Raises:
        ValueError: the batch is empty, or ``fmt`` is not a known format.
    """
    if not batch:
        raise ValueError("encode_batch needs at least one reading")
    if fmt == "fhir":
        text = JSON.encode(build_bundle(batch, now, context))
    elif fmt == "compact":
        text = compact_json(batch, now, context)
    else:
        raise ValueError(f"unknown payload format {fmt!r}; expected 'fhir' or 'compact'")
    payload = text.encode()
    seqs = [stored.seq for stored in batch]
    properties = [
        ("wardlink-format", fmt),
        ("wardlink-count", str(len(batch))),
        ("wardlink-seq-first", str(min(seqs))),
        ("wardlink-seq-last", str(max(seqs))),
    ]
    if context.compression == "deflate":
        packed = zlib.compress(payload, 9)
        if len(packed) < len(payload):
            payload = packed
            properties.append(("content-encoding", CONTENT_ENCODING_DEFLATE))
    return EncodedBatch(payload, CONTENT_TYPES[fmt], tuple(properties))


def decode_payload(encoded: EncodedBatch) -> object:
    """The JSON document inside an EncodedBatch (inflating it if compressed)."""
    payload = encoded.payload
    if ("content-encoding", CONTENT_ENCODING_DEFLATE) in encoded.user_properties:
        payload = zlib.decompress(payload)
    return json.loads(payload)


def make_encoder(fmt: PayloadFormat, context: PayloadContext) -> Encoder:
    """The encoder the publisher calls as ``encoder(batch, now)``.

    Raises:
        ValueError: ``fmt`` is not a known format (checked now, not at first publish).
    """
    if fmt not in CONTENT_TYPES:
        raise ValueError(f"unknown payload format {fmt!r}; expected 'fhir' or 'compact'")
    return partial(encode_batch, fmt=fmt, context=context)
