"""Bytes per reading on the wire, for both payload formats, per kind and batch size.

Run: python bench/payload_size.py
Prints a table: for each kind and batch size (1, 10, 60), the payload bytes per reading
for fhir and compact, plain and deflate-compressed (zlib level 9, as encode_batch does).
Sizes are deterministic (no timing), but they depend on the sample identities
(hub/device/patient id lengths) used here; see the printed context.
"""

from __future__ import annotations

import dataclasses
import sys
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.payloads import PayloadContext, encode_batch
from agent.readings import Kind, StoredReading
from tests.payloads.factory import CONTEXT, RECEIVED_UTC, hub_time, reading_of

BATCH_SIZES = (1, 10, 60)
FORMATS = ("fhir", "compact")


def batch_of(kind: Kind, size: int) -> list[StoredReading]:
    """``size`` readings of ``kind`` one second apart, as the outbox would batch them."""
    return [
        StoredReading(
            seq=10_000 + i,
            reading=reading_of(
                kind,
                number=i,
                received=hub_time(
                    RECEIVED_UTC + timedelta(seconds=i), mono_ns=(5 + i) * 1_000_000_000
                ),
            ),
            state="pending",
        )
        for i in range(size)
    ]


def bytes_per_reading(batch: list[StoredReading], fmt: str, context: PayloadContext) -> float:
    encoded = encode_batch(batch, hub_time(), fmt=fmt, context=context)  # type: ignore[arg-type]
    return len(encoded.payload) / len(batch)


def main() -> None:
    deflate = dataclasses.replace(CONTEXT, compression="deflate")
    print(f"context: hub_id={CONTEXT.hub_id!r} patient id 12 chars, device ids 5-11 chars")
    header = f"{'kind':<17}{'batch':>6}"
    for fmt in FORMATS:
        header += f"{fmt + ' plain':>16}{fmt + ' deflate':>16}"
    print(header)
    print("-" * len(header))
    for kind in Kind:
        for size in BATCH_SIZES:
            batch = batch_of(kind, size)
            line = f"{kind.value:<17}{size:>6}"
            for fmt in FORMATS:
                line += f"{bytes_per_reading(batch, fmt, CONTEXT):>16.1f}"
                line += f"{bytes_per_reading(batch, fmt, deflate):>16.1f}"
            print(line)
    print("bytes per reading = payload bytes / readings in the message (MQTT headers excluded)")


if __name__ == "__main__":
    main()
