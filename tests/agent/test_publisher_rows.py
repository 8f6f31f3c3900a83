"""The publisher with the real payload encoders, fed the outbox rows undecoded.

A real Mosquitto, a real outbox and the agent's own compact and FHIR encoders (the
publisher hands them the outbox's raw rows). What the backend decodes must be every
captured reading, once each, in seq order, with the seq range announced per message,
and every row must be marked sent only through its own PUBACK.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from agent.clock import SystemClock
from agent.health import Health
from agent.outbox import Outbox
from agent.payloads import PayloadContext, make_encoder
from agent.payloads.compact import decode_compact
from agent.publisher import Publisher
from tests.agent.pubharness import HUB_ID, eventually, make_config, make_readings, running
from tests.emulators.subscriber import Subscriber

if TYPE_CHECKING:
    from pathlib import Path

    from agent.localbroker import MosquittoBroker
    from tests.emulators.subscriber import Received

pytestmark = pytest.mark.broker


def _decoded(messages: list[Received], fmt: str) -> list[tuple[int, str]]:
    """(seq, reading id) of every reading in arrival order, as a backend reads them."""
    out: list[tuple[int, str]] = []
    for message in messages:
        document = json.loads(message.payload)
        if fmt == "compact":
            out += [(r["seq"], str(r["reading_id"])) for r in decode_compact(document)]
            continue
        for entry in document["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] != "Observation":
                continue
            parts = {p["url"]: p for p in resource["extension"][1]["extension"]}
            if "readingId" not in parts:  # a reading's own Observation
                ident = resource["identifier"][0]["value"].removeprefix("urn:uuid:")
                out.append((parts["seq"]["valueInteger"], ident))
    return out


@pytest.mark.parametrize(("fmt", "batch_size"), [("compact", 1), ("compact", 7), ("fhir", 3)])
async def test_every_reading_arrives_once_in_seq_order_and_is_marked_sent(
    broker: MosquittoBroker, topic_prefix: str, tmp_path: Path, fmt: str, batch_size: int
) -> None:
    sub = Subscriber(broker.host, broker.port, [f"{topic_prefix}/+/readings"])
    config = make_config(
        broker.host, broker.port, topic_prefix, tmp_path, batch_size=batch_size, inflight_window=4
    )
    # Receipts on: rows must still go pending -> sent on PUBACK (delivered comes later).
    outbox = await Outbox.open(config.storage.path, receipts=True)
    readings = make_readings(45) + make_readings(5, device_id="oxi-2")
    await outbox.capture(readings[:30])
    clock = SystemClock()
    health = Health(hub_id=HUB_ID, clock=clock)
    encoder = make_encoder(fmt, PayloadContext(hub_id=HUB_ID, agent_version="test"))  # type: ignore[arg-type]
    publisher = Publisher(config, outbox, encoder, health, clock, {"devices": []})
    try:
        async with running(publisher):
            await outbox.capture(readings[30:])
            publisher.notify_new_readings()
            await eventually(lambda: len(_decoded(sub.messages(), fmt)) >= len(readings))
            await publisher.flush()
        received = _decoded(sub.messages(), fmt)
        stats = await outbox.stats()
        delivered = await outbox.mark_delivered([r.reading_id for r in readings[:10]])
    finally:
        sub.close()
        await outbox.close()

    assert received == [(seq, str(r.reading_id)) for seq, r in enumerate(readings, start=1)]
    assert (stats.pending, stats.sent, stats.rejected) == (0, len(readings), 0)
    assert delivered == 10
    for message in sub.messages():
        props = dict(message.user_properties)
        seqs = [seq for seq, _ in _decoded([message], fmt)]
        assert props["wardlink-count"] == str(len(seqs))
        assert len(seqs) <= batch_size
        assert (props["wardlink-seq-first"], props["wardlink-seq-last"]) == (
            str(seqs[0]),
            str(seqs[-1]),
        )
