"""encode_batch / make_encoder: MQTT 5 properties, compression, bad calls."""

from __future__ import annotations

import dataclasses
import json
import zlib

import pytest

from agent.payloads import (
    CONTENT_TYPES,
    EncodedBatch,
    decode_payload,
    encode_batch,
    make_encoder,
)
from agent.readings import Kind
from tests.payloads.factory import CONTEXT, hub_time, reading_of, spo2_stream, stored

DEFLATE = ("content-encoding", "deflate")


@pytest.mark.parametrize("fmt", ["fhir", "compact"])
def test_properties_announce_format_count_and_seq_range(fmt: str) -> None:
    encoded = make_encoder(fmt, CONTEXT)(spo2_stream(10, first_seq=70), hub_time())  # type: ignore[arg-type]
    assert encoded.content_type == CONTENT_TYPES[fmt]
    assert dict(encoded.user_properties) == {
        "wardlink-format": fmt,
        "wardlink-count": "10",
        "wardlink-seq-first": "70",
        "wardlink-seq-last": "79",
    }
    # Uncompressed payloads are minified UTF-8 JSON.
    assert b"\n" not in encoded.payload
    assert b", " not in encoded.payload
    json.loads(encoded.payload)


@pytest.mark.parametrize("fmt", ["fhir", "compact"])
def test_deflate_is_announced_and_inflates_to_the_same_document(fmt: str) -> None:
    batch = spo2_stream(60)
    plain = encode_batch(batch, hub_time(), fmt=fmt, context=CONTEXT)  # type: ignore[arg-type]
    packed_context = dataclasses.replace(CONTEXT, compression="deflate")
    packed = encode_batch(batch, hub_time(), fmt=fmt, context=packed_context)  # type: ignore[arg-type]
    assert DEFLATE in packed.user_properties
    assert len(packed.payload) < len(plain.payload)
    assert zlib.decompress(packed.payload) == plain.payload
    assert decode_payload(packed) == decode_payload(plain)


def test_empty_batch_and_unknown_format_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="at least one reading"):
        encode_batch([], hub_time(), fmt="fhir", context=CONTEXT)
    with pytest.raises(ValueError, match="unknown payload format 'hl7v2'"):
        make_encoder("hl7v2", CONTEXT)  # type: ignore[arg-type]


def test_encoding_is_deterministic_for_the_same_batch_and_time() -> None:
    batch = [stored(reading_of(kind), seq) for seq, kind in enumerate(Kind, start=1)]
    first = encode_batch(batch, hub_time(), fmt="fhir", context=CONTEXT)
    again = encode_batch(batch, hub_time(), fmt="fhir", context=CONTEXT)
    assert isinstance(first, EncodedBatch)
    assert first == again
