"""Encoding outbox rows as stored gives the very bytes encoding the Readings gives.

The publisher hands the encoders raw outbox rows (``Outbox.pending_rows``); the compact
encoder reads the stored bodies without building a Reading. The bytes on the wire must
not move: golden/compact_wire_varied.jsonl holds what the encoder produced before the
raw path existed (commit cbaddd8), for 160 varied messages; golden/compact_wire_streams.jsonl
what it produced before stream templates (f6d36f1), for 120 stream messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from agent.outbox import Outbox
from agent.payloads import encode_batch, make_encoder
from agent.readings import StoredReading
from tests.payloads.factory import CONTEXT
from tests.payloads.golden import GOLDEN_DIR
from tests.payloads.streams import stream_cases
from tests.payloads.varied import varied_cases

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from agent.clock import HubTime

WIRE_GOLDEN = GOLDEN_DIR / "compact_wire_varied.jsonl"
# Stream samples (read through templates), as the encoder wrote them before templates.
STREAMS_GOLDEN = GOLDEN_DIR / "compact_wire_streams.jsonl"


@pytest.mark.parametrize(
    ("golden", "make_cases"),
    [(WIRE_GOLDEN, varied_cases), (STREAMS_GOLDEN, stream_cases)],
    ids=["varied", "streams"],
)
def test_compact_bytes_are_what_they_were_before(
    golden: Path, make_cases: Callable[[], list[tuple[list[StoredReading], HubTime]]]
) -> None:
    expected = golden.read_bytes().splitlines()
    cases = make_cases()
    assert len(expected) == len(cases)
    for number, (batch, now) in enumerate(cases):
        encoded = encode_batch(batch, now, fmt="compact", context=CONTEXT)
        assert encoded.payload == expected[number], f"message {number} differs"


async def test_stream_rows_from_a_real_outbox_encode_like_their_readings(tmp_path: Path) -> None:
    # The bodies as the outbox's writer stores them (its fast path for plain samples).
    outbox, cases = await _stored_cases(tmp_path, stream_cases())
    page = await outbox.pending_rows(limit=10_000)
    await outbox.close()
    encoder = make_encoder("compact", CONTEXT)
    rows = {row[0]: row for row in page.rows}
    for number, (batch, now) in enumerate(cases):
        from_rows = encoder.encode_rows([rows[s.seq] for s in batch], page.contexts, now)
        # The outbox numbers rows its own way: compare with the readings at its seqs
        # (whose bytes the golden test above pins).
        from_readings = encode_batch(batch, now, fmt="compact", context=CONTEXT)
        assert from_rows == from_readings, f"message {number} differs"


async def _stored_cases(
    tmp_path: Path, source: list[tuple[list[StoredReading], HubTime]] | None = None
) -> tuple[Outbox, list[tuple[list[StoredReading], HubTime]]]:
    """Cases (the varied readings by default) captured in a real outbox, with its seqs."""
    outbox = await Outbox.open(tmp_path / "outbox.db")
    cases = []
    for batch, now in varied_cases() if source is None else source:
        result = await outbox.capture([stored.reading for stored in batch])
        assert (result.stored, result.duplicates) == (len(batch), 0)
        last = (await outbox.stats()).last_seq
        seqs = range(last - len(batch) + 1, last + 1)
        cases.append(
            (
                [StoredReading(s, r.reading, "pending") for s, r in zip(seqs, batch, strict=True)],
                now,
            )
        )
    return outbox, cases


@pytest.mark.parametrize("fmt", ["compact", "fhir"])
async def test_raw_rows_encode_to_the_same_bytes_as_their_readings(
    tmp_path: Path, fmt: str
) -> None:
    outbox, cases = await _stored_cases(tmp_path)
    page = await outbox.pending_rows(limit=10_000)
    await outbox.close()
    encoder = make_encoder(fmt, CONTEXT)  # type: ignore[arg-type]
    rows = {row[0]: row for row in page.rows}
    for number, (batch, now) in enumerate(cases):
        from_rows = encoder.encode_rows([rows[s.seq] for s in batch], page.contexts, now)
        from_readings = encode_batch(batch, now, fmt=fmt, context=CONTEXT)  # type: ignore[arg-type]
        assert from_rows == from_readings, f"message {number} differs"


def test_encode_rows_refuses_an_empty_message() -> None:
    with pytest.raises(ValueError, match="at least one row"):
        make_encoder("compact", CONTEXT).encode_rows([], {}, varied_cases(count=1)[0][1])
