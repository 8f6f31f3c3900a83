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


def _last_status(sub: Subscriber, device_id: str) -> dict[str, object]:
    document: dict[str, object] = json.loads(
        sub.messages(f"{HUB_ID}/devices/{device_id}/status")[-1].payload
    )
    return document


async def test_a_restart_keeps_when_the_device_was_last_seen_and_measured(
    tmp_path: Path, broker: MosquittoBroker, topic_prefix: str
) -> None:
    # A BP cuff used this morning must not read "never seen, never measured" on the
    # dashboard because the hub rebooted at noon.
    device = PtySerialDevice("nonin-df8", link=tmp_path / "nonin.tty", speed=5.0)
    device.plug()
    emulator = asyncio.create_task(device.run())
    devices = (
        f"  - id: oxi\n    driver: serial-oximeter\n    protocol: nonin-df8\n"
        f"    port: {device.port}\n    expected_interval_s: 3600\n    reopen_wait_s: 1\n"
    )
    config = write_config(tmp_path, port=broker.port, prefix=topic_prefix, devices_yaml=devices)
    first = Subscriber(broker.host, broker.port, [f"{topic_prefix}/{HUB_ID}/#"])
    agent = AgentProcess(config=config, log_path=tmp_path / "agent.log")
    try:
        await agent.start()
        await _until(lambda: first.messages(f"{HUB_ID}/readings"))
        emulator.cancel()
        device.unplug()
        await _until(lambda: _states(first, "oxi")[-1] == "disconnected")
        before = _last_status(first, "oxi")
        assert before["last_reading_at"] is not None
        assert await agent.terminate() == 0

        # The second run never hears from the device: only the saved history can tell.
        second = Subscriber(broker.host, broker.port, [f"{topic_prefix}/{HUB_ID}/#"])
        try:
            await agent.start()
            await _until(lambda: sub_online(second))
            # The first message is the retained one the first run left; wait for this run's.
            await _until(lambda: len(second.messages(f"{HUB_ID}/devices/oxi/status")) >= 2)
            after = _last_status(second, "oxi")
            assert after["last_reading_kind"] == "spo2"
            assert after["last_reading_at"] == before["last_reading_at"]
            assert after["last_seen"] is not None
            assert str(after["last_seen"]) >= str(before["last_reading_at"])
            assert after["state"] != "connected"
            assert await agent.terminate() == 0
        finally:
            second.close()
    finally:
        await agent.kill()
        first.close()
        device.close()


def sub_online(sub: Subscriber) -> bool:
    """The agent's retained hub status says online (its second run has connected)."""
    return any(
        json.loads(m.payload).get("state") == "online" for m in sub.messages(f"{HUB_ID}/status")
    )


async def test_a_plugged_in_but_silent_oximeter_is_seen_not_connected(
    tmp_path: Path, broker: MosquittoBroker, topic_prefix: str
) -> None:
    # The USB cable is in, the oximeter is switched off: the port opens, nothing comes.
    # "connected" would tell the ward the patient simply has not measured.
    device = PtySerialDevice("nonin-df8", link=tmp_path / "nonin.tty", speed=5.0)
    device.plug()
    devices = (
        f"  - id: oxi\n    driver: serial-oximeter\n    protocol: nonin-df8\n"
        f"    port: {device.port}\n    expected_interval_s: 3\n    reopen_wait_s: 1\n"
    )
    config = write_config(tmp_path, port=broker.port, prefix=topic_prefix, devices_yaml=devices)
    sub = Subscriber(broker.host, broker.port, [f"{topic_prefix}/{HUB_ID}/#"])
    agent = AgentProcess(config=config, log_path=tmp_path / "agent.log")
    emulator: asyncio.Task[None] | None = None
    try:
        await agent.start()
        await _until(lambda: "connected" in _states(sub, "oxi"), timeout_s=30)
        try:
            await _until(lambda: _states(sub, "oxi")[-1] == "seen", timeout_s=30)
        except TimeoutError:
            pytest.fail(f"states {_states(sub, 'oxi')}; log: {agent.log_text()[-2000:]}")
        assert not sub.messages(f"{HUB_ID}/readings")
        # Switched on: readings flow and the device is connected again.
        emulator = asyncio.create_task(device.run())
        await _until(lambda: sub.messages(f"{HUB_ID}/readings"), timeout_s=30)
        await _until(lambda: _states(sub, "oxi")[-1] == "connected", timeout_s=30)
        assert await agent.terminate() == 0
    finally:
        if emulator is not None:
            emulator.cancel()
        await agent.kill()
        sub.close()
        device.close()


async def test_the_wrong_oximeter_is_an_error_with_a_reason_and_no_readings(
    tmp_path: Path, broker: MosquittoBroker, topic_prefix: str
) -> None:
    # Another patient's Masimo plugged into this hub: its serial is not the configured one.
    device = PtySerialDevice(
        "masimo-ascii", link=tmp_path / "masimo.tty", speed=5.0, serial_number="0000999999"
    )
    device.plug()
    emulator = asyncio.create_task(device.run())
    devices = (
        f"  - id: oxi\n    driver: serial-oximeter\n    protocol: masimo-ascii\n"
        f"    port: {device.port}\n    serial_number: '0000123456'\n"
    )
    config = write_config(tmp_path, port=broker.port, prefix=topic_prefix, devices_yaml=devices)
    sub = Subscriber(broker.host, broker.port, [f"{topic_prefix}/{HUB_ID}/#"])
    agent = AgentProcess(config=config, log_path=tmp_path / "agent.log")
    try:
        await agent.start()
        await _until(lambda: "error" in _states(sub, "oxi"), timeout_s=30)
        status = next(
            json.loads(m.payload)
            for m in sub.messages(f"{HUB_ID}/devices/oxi/status")
            if json.loads(m.payload)["state"] == "error"
        )
        assert "right oximeter" in str(status["reason"])  # what the technician must do
        await asyncio.sleep(2)  # it keeps streaming; none of it may be filed for this patient
        assert not sub.messages(f"{HUB_ID}/readings")
        assert await agent.terminate() == 0
    finally:
        emulator.cancel()
        await agent.kill()
        sub.close()
        device.close()
