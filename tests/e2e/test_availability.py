"""Device availability on its retained topic, reached by real causes: a pty pulled out."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agent.localbroker import MosquittoBroker
from drivers.emulators.serial import PtySerialDevice
from tests.e2e.harness import HUB_ID, AgentProcess, write_config
from tests.emulators.subscriber import Subscriber

pytestmark = [pytest.mark.broker, pytest.mark.pty]


def _states(sub: Subscriber, device_id: str) -> list[str]:
    return [
        json.loads(m.payload)["state"] for m in sub.messages(f"{HUB_ID}/devices/{device_id}/status")
    ]


async def _until(predicate: object, timeout_s: float = 20.0) -> None:
    assert callable(predicate)
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_connected_then_disconnected_then_not_seen(
    tmp_path: Path, broker: MosquittoBroker, topic_prefix: str
) -> None:
    device = PtySerialDevice("nonin-df8", link=tmp_path / "nonin.tty", speed=5.0)
    device.plug()
    emulator = asyncio.create_task(device.run())
    devices = (
        f"  - id: oxi\n    driver: serial-oximeter\n    protocol: nonin-df8\n"
        f"    port: {device.port}\n    expected_interval_s: 3\n    reopen_wait_s: 1\n"
    )
    config = write_config(tmp_path, port=broker.port, prefix=topic_prefix, devices_yaml=devices)
    sub = Subscriber(broker.host, broker.port, [f"{topic_prefix}/{HUB_ID}/#"])
    agent = AgentProcess(config=config, log_path=tmp_path / "agent.log")
    try:
        await agent.start()
        await _until(lambda: "connected" in _states(sub, "oxi"))
        await _until(lambda: sub.messages(f"{HUB_ID}/readings"))  # the patient measured
        emulator.cancel()
        device.unplug()  # the USB cable is pulled and stays out
        await _until(lambda: _states(sub, "oxi")[-1] == "disconnected")
        # Silent past expected_interval_s (3 s): the retained topic says so by itself.
        await _until(lambda: _states(sub, "oxi")[-1] == "not_seen", timeout_s=30)
        last = json.loads(sub.messages(f"{HUB_ID}/devices/oxi/status")[-1].payload)
        assert last["last_seen"] is not None
        assert last["last_reading_kind"] == "spo2"
        assert await agent.terminate() == 0
    finally:
        await agent.kill()
        sub.close()
        device.close()
