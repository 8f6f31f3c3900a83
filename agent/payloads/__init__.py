"""Wire formats for readings: FHIR R4 (default) and compact JSON.

Pure builders: readings in, bytes out. The publisher gets its encoder once from
``make_encoder(fmt, context)`` and calls its ``encode_rows`` with one MQTT message's
worth of outbox rows (undecoded: the compact format reads the stored bodies directly)
and the current hub time (times captured before the hub clock synced are re-stamped
here, at publish time; see agent.clock.restamp). Called with StoredReadings it gives
the same bytes.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from agent.outbox_codec import decode_pending
from agent.payloads.compact import JSON, compact_json, compact_message
from agent.payloads.context import PayloadContext
from agent.payloads.fhir import build_bundle

if TYPE_CHECKING:
    from collections.abc import Mapping

    from agent.clock import HubTime
    from agent.outbox_codec import PendingRow, ReadingContext
    from agent.readings import StoredReading

__all__ = [
    "CONTENT_TYPES",
    "EncodedBatch",
    "Encoder",
    "PayloadContext",
    "PayloadEncoder",
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
    seqs = [stored.seq for stored in batch]
    return _message(text, fmt, len(batch), min(seqs), max(seqs), context)


def _message(
    text: str, fmt: str, count: int, seq_first: int, seq_last: int, context: PayloadContext
) -> EncodedBatch:
    """The payload bytes (compressed if asked and smaller) and their user properties."""
    payload = text.encode()
    properties = [
        ("wardlink-format", fmt),
        ("wardlink-count", str(count)),
        ("wardlink-seq-first", str(seq_first)),
        ("wardlink-seq-last", str(seq_last)),
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


class PayloadEncoder:
    """One format for one hub: encodes StoredReadings, or outbox rows as they are stored."""

    def __init__(self, fmt: PayloadFormat, context: PayloadContext) -> None:
        """Check the format now, not at the first publish.

        Raises:
            ValueError: ``fmt`` is not a known format.
        """
        if fmt not in CONTENT_TYPES:
            raise ValueError(f"unknown payload format {fmt!r}; expected 'fhir' or 'compact'")
        self.fmt: PayloadFormat = fmt
        self.context = context

    def __call__(self, batch: Sequence[StoredReading], now: HubTime) -> EncodedBatch:
        """``encode_batch`` in this format."""
        return encode_batch(batch, now, fmt=self.fmt, context=self.context)

    def encode_rows(
        self,
        rows: Sequence[PendingRow],
        contexts: Mapping[int, ReadingContext],
        now: HubTime,
    ) -> EncodedBatch:
        """One message from outbox rows (``Outbox.pending_rows``).

        The same bytes ``encode_batch`` gives for those readings. Compact reads the
        stored bodies directly; FHIR builds each Reading first (its Bundle costs
        several times more than that).

        Raises:
            ValueError: ``rows`` is empty, or a body is not of the outbox's layout.
        """
        if not rows:
            raise ValueError("encode_rows needs at least one row")
        if self.fmt == "compact":
            text, first, last = compact_message(rows, contexts, now, self.context)
        else:
            text = JSON.encode(build_bundle(decode_pending(rows, contexts), now, self.context))
            seqs = [row[0] for row in rows]
            first, last = min(seqs), max(seqs)
        return _message(text, self.fmt, len(rows), first, last, self.context)


def make_encoder(fmt: PayloadFormat, context: PayloadContext) -> PayloadEncoder:
    """The encoder the publisher uses (``encode_rows``; callable with StoredReadings too).

    Raises:
        ValueError: ``fmt`` is not a known format (checked now, not at first publish).
    """
    return PayloadEncoder(fmt, context)
