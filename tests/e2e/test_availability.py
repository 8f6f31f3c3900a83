"""Device availability on its retained topic, reached by real causes: a pty pulled out."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
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


@dataclass
class Rig:
    """An emulated oximeter on a pty, the real agent with it configured, a backend view."""

    device: PtySerialDevice
    agent: AgentProcess
    sub: Subscriber
    emulator: asyncio.Task[None] | None = None

    def switch_on(self) -> None:
        """The oximeter starts sending (a finger in, or the device switched on)."""
        self.emulator = asyncio.create_task(self.device.run())

    def switch_off(self) -> None:
        if self.emulator is not None:
            self.emulator.cancel()

    def states(self) -> list[str]:
        return _states(self.sub, "oxi")

    def readings(self) -> int:
        return len(self.sub.messages(f"{HUB_ID}/readings"))


@contextlib.asynccontextmanager
async def oximeter_hub(
    tmp_path: Path,
    broker: MosquittoBroker,
    prefix: str,
    device_yaml: str,
    *,
    protocol: str = "nonin-df8",
    streaming: bool = True,
    serial_number: str = "0000123456",
) -> AsyncIterator[Rig]:
    """``device_yaml``: the device's keys after its port (indented by four spaces)."""
    device = PtySerialDevice(
        protocol, link=tmp_path / "oxi.tty", speed=5.0, serial_number=serial_number
    )
    device.plug()
    devices = (
        f"  - id: oxi\n    driver: serial-oximeter\n    protocol: {protocol}\n"
        f"    port: {device.port}\n{device_yaml}"
    )
    config = write_config(tmp_path, port=broker.port, prefix=prefix, devices_yaml=devices)
    sub = Subscriber(broker.host, broker.port, [f"{prefix}/{HUB_ID}/#"])
    rig = Rig(device, AgentProcess(config=config, log_path=tmp_path / "agent.log"), sub)
    if streaming:
        rig.switch_on()
    try:
        await rig.agent.start()
        yield rig
    finally:
        rig.switch_off()
        await rig.agent.kill()
        sub.close()
        device.close()


QUICK = "    expected_interval_s: 3\n    reopen_wait_s: 1\n"


async def test_connected_then_disconnected_then_not_seen(
    tmp_path: Path, broker: MosquittoBroker, topic_prefix: str
) -> None:
    async with oximeter_hub(tmp_path, broker, topic_prefix, QUICK) as rig:
        await _until(lambda: "connected" in rig.states())
        await _until(rig.readings)  # the patient measured
        rig.switch_off()
        rig.device.unplug()  # the USB cable is pulled and stays out
        await _until(lambda: rig.states()[-1] == "disconnected")
        # Silent past expected_interval_s (3 s): the retained topic says so by itself.
        await _until(lambda: rig.states()[-1] == "not_seen", timeout_s=30)
        last = _last_status(rig.sub, "oxi")
        assert last["last_seen"] is not None
        assert last["last_reading_kind"] == "spo2"
        assert await rig.agent.terminate() == 0


def _last_status(sub: Subscriber, device_id: str) -> dict[str, object]:
    document: dict[str, object] = json.loads(
        sub.messages(f"{HUB_ID}/devices/{device_id}/status")[-1].payload
    )
    return document


def _online(sub: Subscriber) -> bool:
    """The agent's retained hub status says online."""
    return any(
        json.loads(m.payload).get("state") == "online" for m in sub.messages(f"{HUB_ID}/status")
    )


async def test_a_restart_keeps_when_the_device_was_last_seen_and_measured(
    tmp_path: Path, broker: MosquittoBroker, topic_prefix: str
) -> None:
    # A BP cuff used this morning must not read "never seen, never measured" on the
    # dashboard because the hub rebooted at noon.
    hourly = "    expected_interval_s: 3600\n    reopen_wait_s: 1\n"
    async with oximeter_hub(tmp_path, broker, topic_prefix, hourly) as rig:
        await _until(rig.readings)
        rig.switch_off()
        rig.device.unplug()
        await _until(lambda: rig.states()[-1] == "disconnected")
        before = _last_status(rig.sub, "oxi")
        assert before["last_reading_at"] is not None
        assert await rig.agent.terminate() == 0

        # The second run never hears from the device: only the saved history can tell.
        second = Subscriber(broker.host, broker.port, [f"{topic_prefix}/{HUB_ID}/#"])
        try:
            await rig.agent.start()
            await _until(lambda: _online(second))
            # The first message is the retained one the first run left; wait for this run's.
            await _until(lambda: len(second.messages(f"{HUB_ID}/devices/oxi/status")) >= 2)
            after = _last_status(second, "oxi")
            assert after["last_reading_kind"] == "spo2"
            assert after["last_reading_at"] == before["last_reading_at"]
            assert after["last_seen"] is not None
            assert str(after["last_seen"]) >= str(before["last_reading_at"])
            assert after["state"] != "connected"
            assert await rig.agent.terminate() == 0
        finally:
            second.close()


async def test_a_plugged_in_but_silent_oximeter_is_seen_not_connected(
    tmp_path: Path, broker: MosquittoBroker, topic_prefix: str
) -> None:
    # The USB cable is in, the oximeter is switched off: the port opens, nothing comes.
    # "connected" would tell the ward the patient simply has not measured.
    async with oximeter_hub(tmp_path, broker, topic_prefix, QUICK, streaming=False) as rig:
        await _until(lambda: "connected" in rig.states(), timeout_s=30)
        try:
            await _until(lambda: rig.states()[-1] == "seen", timeout_s=30)
        except TimeoutError:
            pytest.fail(f"states {rig.states()}; log: {rig.agent.log_text()[-2000:]}")
        assert not rig.readings()
        rig.switch_on()  # readings flow and the device is connected again
        await _until(rig.readings, timeout_s=30)
        await _until(lambda: rig.states()[-1] == "connected", timeout_s=30)
        assert await rig.agent.terminate() == 0


async def test_the_wrong_oximeter_is_an_error_with_a_reason_and_no_readings(
    tmp_path: Path, broker: MosquittoBroker, topic_prefix: str
) -> None:
    # Another patient's Masimo plugged into this hub: its serial is not the configured one.
    expects = "    serial_number: '0000123456'\n"
    async with oximeter_hub(
        tmp_path, broker, topic_prefix, expects, protocol="masimo-ascii", serial_number="0000999999"
    ) as rig:
        await _until(lambda: "error" in rig.states(), timeout_s=30)
        status = next(
            json.loads(m.payload)
            for m in rig.sub.messages(f"{HUB_ID}/devices/oxi/status")
            if json.loads(m.payload)["state"] == "error"
        )
        assert "right oximeter" in str(status["reason"])  # what the technician must do
        await asyncio.sleep(2)  # it keeps streaming; none of it may be filed for this patient
        assert not rig.readings()
        assert await rig.agent.terminate() == 0
