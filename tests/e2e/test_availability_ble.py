"""A BLE thermometer that stops advertising goes from seen to not_seen on its retained topic.

The real Runtime (config file, outbox, publisher, status) with the BLE driver on bumble's
in-process radio; the only thing swapped is the radio (BlueZ cannot run here).
"""

from __future__ import annotations

import asyncio
import functools
import json
from pathlib import Path

import pytest

from agent.app import Runtime
from agent.configload import load_config
from agent.localbroker import MosquittoBroker
from drivers.ble.driver import build
from drivers.emulators.ble import BleWorld
from drivers.emulators.ble_cli import demo_peripheral
from tests.e2e.harness import HUB_ID, write_config
from tests.emulators.subscriber import Subscriber

pytestmark = [pytest.mark.broker, pytest.mark.bumble]
ADDRESS = "C0:FF:EE:00:00:42"


async def test_thermometer_goes_not_seen_when_it_stops_advertising(
    tmp_path: Path, broker: MosquittoBroker, topic_prefix: str
) -> None:
    world = BleWorld()
    await world.start()
    thermometer = demo_peripheral("thermometer", ADDRESS)
    await thermometer.attach(world)
    devices = (
        f'  - id: thermo\n    driver: ble-thermometer\n    address: "{ADDRESS}"\n'
        "    idle_s: 0.5\n    rest_s: 0.5\n    expected_interval_s: 3\n"
    )
    config = load_config(
        write_config(tmp_path, port=broker.port, prefix=topic_prefix, devices_yaml=devices)
    )
    sub = Subscriber(broker.host, broker.port, [f"{topic_prefix}/{HUB_ID}/devices/thermo/status"])

    def states() -> list[str]:
        return [json.loads(m.payload)["state"] for m in sub.messages()]

    on_radio = functools.partial(
        build, link_factory=world.link_factory, scanner_factory=world.scanner_factory
    )
    runtime = Runtime(config, driver_factories={"ble-thermometer": on_radio})
    task = asyncio.create_task(runtime.run())
    try:
        async with asyncio.timeout(30):
            while "connected" not in states():  # it advertised, we connected and read it
                await asyncio.sleep(0.05)
            await thermometer.stop_advertising()  # the patient put it away (or it died)
            while states()[-1] != "not_seen":
                await asyncio.sleep(0.05)
        last = json.loads(sub.messages()[-1].payload)
        assert last["last_reading_kind"] == "body_temperature"
        assert last["last_seen"] is not None
    finally:
        runtime.request_stop()
        await asyncio.wait_for(task, 15)
        sub.close()
        await thermometer.close()
        await world.close()
