"""A bumble BP cuff through the real driver, Outbox, Publisher and Mosquitto to a subscriber.

The cuff re-sends its memory on every connection; the subscriber must see each
measurement once (one reading_id per record), filed under the configured patient.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING

import pytest

from agent.outbox import Outbox
from drivers.ble.driver import build
from drivers.ble.settings import BleBloodPressureSettings
from drivers.emulators.ble import BleWorld
from drivers.emulators.ble_peripherals import DeviceInfo, StoredRecordsPeripheral
from tests.agent.pubharness import build as build_publisher
from tests.agent.pubharness import eventually, make_config, running
from tests.drivers.ble_support import PATIENT, RecordingReporter, bp_payload, make_ctx
from tests.emulators.subscriber import Subscriber

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from agent.localbroker import MosquittoBroker
    from agent.publisher import Publisher
    from agent.readings import Reading
    from drivers.base import CaptureResult

pytestmark = [pytest.mark.bumble, pytest.mark.broker]
CUFF = "A4:C1:38:00:00:01"


class WakingSink:
    """What the composition root does: capture, then wake the publisher."""

    def __init__(self, outbox: Outbox, publisher: Publisher) -> None:
        self.outbox = outbox
        self.publisher = publisher

    async def capture(self, readings: Sequence[Reading]) -> CaptureResult:
        result = await self.outbox.capture(readings)
        self.publisher.notify_new_readings()
        return result


def published(sub: Subscriber) -> list[dict[str, object]]:
    return [
        r["reading"] for m in sub.messages("/readings") for r in json.loads(m.payload)["readings"]
    ]


async def test_cuff_records_reach_the_broker_once_each(
    broker: MosquittoBroker, topic_prefix: str, tmp_path: Path
) -> None:
    sub = Subscriber(broker.host, broker.port, [f"{topic_prefix}/#"])
    world = BleWorld()
    await world.start()
    cuff = StoredRecordsPeripheral(
        CUFF, "Cuff", service_uuid="1810", measurement_uuid="2A35", info=DeviceInfo()
    )
    cuff.records += [bp_payload(120, 80, 1), bp_payload(131, 85, 2)]
    await cuff.attach(world)
    config = make_config(broker.host, broker.port, topic_prefix, tmp_path)
    outbox = await Outbox.open(config.storage.path)
    publisher, _ = build_publisher(config, outbox)
    settings = BleBloodPressureSettings(id="bp-cuff", address=CUFF, idle_s=0.3, rest_s=0.3)
    ctx = make_ctx(WakingSink(outbox, publisher), RecordingReporter())
    driver = build(
        settings,
        ctx,
        link_factory=world.link_factory,
        scanner_factory=world.scanner_factory,
        state_dir=tmp_path,
    )
    task = asyncio.create_task(driver.run())
    try:
        async with running(publisher):
            await eventually(lambda: cuff.connections_seen >= 3, timeout_s=15)
            await eventually(lambda: len({r["reading_id"] for r in published(sub)}) >= 2)
            await publisher.flush()
    finally:
        # Cancelled while the cuff reconnects (rest_s is short): shutdown mid-session
        # must still end the driver (this once hung on a swallowed cancellation).
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await driver.close()
        await world.close()
        await outbox.close()
        sub.close()
    readings = published(sub)
    assert len({r["reading_id"] for r in readings}) == 2  # three connections, two records
    assert {r["patient"]["patient_id"] for r in readings} == {PATIENT.patient_id}  # type: ignore[index]
    systolic = sorted(v[1] for r in readings for v in r["values"] if v[0] == "systolic")  # type: ignore[attr-defined]
    assert sorted(set(systolic)) == [120, 131]
