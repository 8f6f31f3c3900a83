"""Nonin DF8 end to end: pty emulator -> driver -> outbox -> publisher -> real Mosquitto."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import pytest

from agent.app import CaptureSink
from agent.outbox import Outbox
from drivers.base import DeviceState
from drivers.emulators.serial import PtySerialDevice
from tests.agent.pubharness import build, eventually, make_config, reading_ids, running
from tests.drivers.serial_support import rig
from tests.emulators.subscriber import Subscriber

if TYPE_CHECKING:
    from pathlib import Path

    from agent.localbroker import MosquittoBroker

pytestmark = [pytest.mark.pty, pytest.mark.broker]
CONNECTED, DISCONNECTED = DeviceState.CONNECTED, DeviceState.DISCONNECTED


async def test_df8_readings_reach_the_broker_across_an_unplug(
    broker: MosquittoBroker, topic_prefix: str, tmp_path: Path
) -> None:
    sub = Subscriber(broker.host, broker.port, [f"{topic_prefix}/#"])
    config = make_config(broker.host, broker.port, topic_prefix, tmp_path, batch_size=5)
    outbox = await Outbox.open(config.storage.path)
    publisher, health = build(config, outbox)
    sink = CaptureSink(outbox, health, publisher.notify_new_readings)
    device = PtySerialDevice("nonin-df8", link=tmp_path / "by-id-nonin", speed=10)
    try:
        async with running(publisher):
            async with rig(tmp_path, "nonin-df8", device=device, outbox=outbox, sink=sink) as r:
                await eventually(lambda: len(reading_ids(sub.messages())) >= 3, timeout_s=30)
                device.unplug()
                await eventually(lambda: r.reporter.last_state is DISCONNECTED, timeout_s=30)
                await asyncio.sleep(0.3)
                device.plug()
                await eventually(lambda: r.reporter.last_state is CONNECTED, timeout_s=30)
                await asyncio.sleep(0.6)
            await publisher.flush()
            stored = await outbox.list_readings(state="sent", limit=10_000)
            pending = await outbox.list_readings(state="pending", limit=10_000)
            expected = {str(row.reading.reading_id) for row in stored + pending}
            await eventually(lambda: expected <= set(reading_ids(sub.messages())), timeout_s=30)
    finally:
        sub.close()
        await outbox.close()
    assert len(expected) >= 6
    readings = [
        r["reading"] for m in sub.messages("/readings") for r in json.loads(m.payload)["readings"]
    ]
    first = readings[0]
    assert first["device"]["device_id"] == "oximeter"
    assert first["patient"]["patient_id"] == "PATIENT-TEST-1"
    assert first["kind"] == "spo2"
    assert first["cadence"] == "continuous"
    names = {name for reading in readings for name, *_ in reading["values"]}
    assert names == {"spo2", "pulse_rate"}
