"""BLE availability on the retained topics, through the real Runtime and Mosquitto.

- A thermometer that stops advertising goes from seen to not_seen on its retained topic.
- A swapped cuff (serial mismatch) is `error` with an actionable reason on its status
  topic, raises the hub alarm on the health topic, publishes nothing, and its serials
  and address stay out of the INFO+ log.

The real Runtime (config file, outbox, publisher, status) with the BLE driver on bumble's
in-process radio; the only thing swapped is the radio (BlueZ cannot run here).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from pathlib import Path
from typing import Any

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


async def test_swapped_cuff_is_an_error_and_a_hub_alarm_with_no_identifier_in_the_log(
    tmp_path: Path,
    broker: MosquittoBroker,
    topic_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = BleWorld()
    await world.start()
    cuff = demo_peripheral("blood-pressure", ADDRESS)
    cuff.info.serial_number = "SN-NEIGHBOUR-9"  # another patient's cuff, same address
    await cuff.attach(world)
    devices = (
        f'  - id: bp-cuff\n    driver: ble-blood-pressure\n    address: "{ADDRESS}"\n'
        '    serial_number: "SN-OURS-1"\n    idle_s: 0.5\n    rest_s: 0.5\n'
    )
    config = load_config(
        write_config(tmp_path, port=broker.port, prefix=topic_prefix, devices_yaml=devices)
    )
    base = f"{topic_prefix}/{HUB_ID}"
    sub = Subscriber(
        broker.host,
        broker.port,
        [f"{base}/devices/bp-cuff/status", f"{base}/health", f"{base}/readings"],
    )

    def last(suffix: str) -> dict[str, Any] | None:
        found = sub.messages(suffix)
        return json.loads(found[-1].payload) if found else None

    def alarms() -> dict[str, str]:
        health = last("/health")
        return {a["name"]: a["detail"] for a in health["alarms"]} if health else {}

    on_radio = functools.partial(
        build, link_factory=world.link_factory, scanner_factory=world.scanner_factory
    )
    caplog.set_level(logging.INFO)
    runtime = Runtime(config, driver_factories={"ble-blood-pressure": on_radio})
    task = asyncio.create_task(runtime.run())
    try:
        # The hub's health and the device's status are separate messages: wait for both
        # (the health can arrive first).
        async with asyncio.timeout(30):
            while "device_error:bp-cuff" not in alarms() or (
                (last("/devices/bp-cuff/status") or {}).get("state") != "error"
            ):
                await asyncio.sleep(0.05)
        status = last("/devices/bp-cuff/status")
        assert status is not None
        assert status["state"] == "error"
        assert "expected SN-OURS-1, device reports SN-NEIGHBOUR-9" in status["reason"]
        assert "serial mismatch" in alarms()["device_error:bp-cuff"]
    finally:
        runtime.request_stop()
        await asyncio.wait_for(task, 15)
        sub.close()
        await cuff.close()
        await world.close()
    assert sub.messages("/readings") == []  # nothing of the neighbour's was published
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert any("serial mismatch" in line for line in loud)
    for identifier in ("SN-NEIGHBOUR-9", "SN-OURS-1", ADDRESS):
        assert not [line for line in loud if identifier in line], identifier
