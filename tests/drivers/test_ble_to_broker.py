"""bumble devices through the real driver, Outbox, Publisher and Mosquitto to a subscriber.

Counts are taken over every reading the subscriber received, duplicates included: a
record delivered twice must fail these tests, not be folded away by a set.

- A BP cuff re-sends its memory on every connection: each measurement reaches the broker
  once, filed under the configured patient.
- A glucose meter read through RACP, then the agent side restarted for real (driver,
  publisher and outbox closed; a new outbox opened on the same file and a new driver on
  the same state directory): the second run asks only for the records after the cursor,
  and the broker sees each record once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from agent.outbox import Outbox
from drivers.ble.driver import build
from drivers.ble.settings import BleBloodPressureSettings, BleGlucoseSettings
from drivers.emulators.ble import BleWorld
from drivers.emulators.ble_glucose_meter import GlucoseMeter, MeterRecord
from drivers.emulators.ble_peripherals import DeviceInfo, StoredRecordsPeripheral
from tests.agent.pubharness import build as build_publisher
from tests.agent.pubharness import eventually, make_config, running
from tests.drivers.ble_support import (
    PATIENT,
    RecordingReporter,
    bp_payload,
    glucose_context,
    glucose_payload,
    make_ctx,
    world_fixture,  # noqa: F401 - provides the `world` fixture
)
from tests.emulators.subscriber import Subscriber

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence
    from pathlib import Path

    from agent.config import Config
    from agent.localbroker import MosquittoBroker
    from agent.publisher import Publisher
    from agent.readings import Reading
    from drivers.base import CaptureResult
    from drivers.ble.settings import BleSettings

pytestmark = [pytest.mark.bumble, pytest.mark.broker]
CUFF = "A4:C1:38:00:00:01"
METER = "A4:C1:38:00:00:02"


class WakingSink:
    """What the composition root does: capture, then wake the publisher."""

    def __init__(self, outbox: Outbox, publisher: Publisher) -> None:
        self.outbox = outbox
        self.publisher = publisher

    async def capture(self, readings: Sequence[Reading]) -> CaptureResult:
        result = await self.outbox.capture(readings)
        self.publisher.notify_new_readings()
        return result


def published(sub: Subscriber) -> list[dict[str, Any]]:
    """Every reading received, in arrival order, duplicates kept."""
    return [
        r["reading"] for m in sub.messages("/readings") for r in json.loads(m.payload)["readings"]
    ]


@dataclass
class AgentSide:
    """One run of the hub's side: an outbox, a publisher and a driver task."""

    publisher: Publisher
    reporter: RecordingReporter


@contextlib.asynccontextmanager
async def agent_side(
    config: Config, world: BleWorld, settings: BleSettings, state_dir: Path
) -> AsyncIterator[AgentSide]:
    """Open the outbox, run publisher and driver; on exit close all three, as a stop does."""
    outbox = await Outbox.open(config.storage.path)
    publisher, _ = build_publisher(config, outbox)
    reporter = RecordingReporter()
    driver = build(
        settings,
        make_ctx(WakingSink(outbox, publisher), reporter),
        link_factory=world.link_factory,
        scanner_factory=world.scanner_factory,
        state_dir=state_dir,
    )
    task = asyncio.create_task(driver.run())
    try:
        async with running(publisher):
            yield AgentSide(publisher, reporter)
            await publisher.flush()
    finally:
        # Cancelled while the device may be reconnecting: shutdown mid-session must still
        # end the driver (this once hung on a swallowed cancellation).
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await driver.close()
        await outbox.close()


async def test_cuff_records_reach_the_broker_once_each(
    broker: MosquittoBroker, topic_prefix: str, tmp_path: Path, world: BleWorld
) -> None:
    sub = Subscriber(broker.host, broker.port, [f"{topic_prefix}/#"])
    cuff = StoredRecordsPeripheral(
        CUFF, "Cuff", service_uuid="1810", measurement_uuid="2A35", info=DeviceInfo()
    )
    cuff.records += [bp_payload(120, 80, 1), bp_payload(131, 85, 2)]
    await cuff.attach(world)
    config = make_config(broker.host, broker.port, topic_prefix, tmp_path)
    settings = BleBloodPressureSettings(id="bp-cuff", address=CUFF, idle_s=0.3, rest_s=0.3)
    try:
        async with agent_side(config, world, settings, tmp_path):
            # Three connections: the cuff re-sent both records twice more.
            await eventually(lambda: cuff.connections_seen >= 3, timeout_s=15)
            await eventually(lambda: len(published(sub)) >= 2)
    finally:
        sub.close()
    readings = published(sub)
    assert len(readings) == 2  # every delivery counted: a re-sent record would make 3
    assert len({r["reading_id"] for r in readings}) == 2
    assert {r["patient"]["patient_id"] for r in readings} == {PATIENT.patient_id}
    systolic = sorted(v[1] for r in readings for v in r["values"] if v[0] == "systolic")
    assert systolic == [120, 131]


async def test_glucose_racp_resume_reaches_the_broker_once_each_across_an_agent_restart(
    broker: MosquittoBroker, topic_prefix: str, tmp_path: Path, world: BleWorld
) -> None:
    sub = Subscriber(broker.host, broker.port, [f"{topic_prefix}/#"])
    meter = GlucoseMeter(METER, "Meter")
    meter.add_record(MeterRecord(1, glucose_payload(1, 95)))
    meter.add_record(
        MeterRecord(2, glucose_payload(2, 140, context_follows=True), glucose_context(2))
    )
    await meter.attach(world)
    config = make_config(broker.host, broker.port, topic_prefix, tmp_path)
    state_dir = tmp_path / "state"
    # rest_s keeps each run to one connection: the second one is the restarted agent's.
    settings = BleGlucoseSettings(id="glucose", address=METER, idle_s=0.5, rest_s=60)
    try:
        async with agent_side(config, world, settings, state_dir):
            await eventually(lambda: len(published(sub)) >= 2)
            await eventually(lambda: meter.connections_seen == 1 and not meter.is_connected)
        # The agent is stopped (outbox closed). The patient measures once more.
        meter.add_record(MeterRecord(3, glucose_payload(3, 101)))
        async with agent_side(config, world, settings, state_dir) as restarted:
            await eventually(lambda: len(published(sub)) >= 3)
            await eventually(lambda: meter.connections_seen == 2 and not meter.is_connected)
            assert restarted.reporter.counters["glucose_meter_resets"] == 0
    finally:
        sub.close()
    # After the restart the meter was asked only for records >= 3 (RACP 01 03 01 0300).
    assert meter.racp.requests == [bytes.fromhex("0101"), bytes.fromhex("0103010300")]
    readings = published(sub)
    assert [r["device_seq"] for r in readings] == [1, 2, 3]  # duplicates included
    assert {r["patient"]["patient_id"] for r in readings} == {PATIENT.patient_id}
    with_context = next(r for r in readings if r["device_seq"] == 2)
    assert with_context["extra"].get("meal") is not None  # the context travelled with it
