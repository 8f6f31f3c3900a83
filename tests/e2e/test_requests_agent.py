"""Remote requests answered by the real agent process (the real Runtime), not a stand-in.

A streaming oximeter on a pty, the agent as systemd runs it, a private Mosquitto, and a
backend that sends requests and reads the responses and the retained topics.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import pytest

from drivers.emulators.serial import PtySerialDevice
from tests.e2e.harness import HUB_ID, AgentProcess, serial_device, write_config
from tests.emulators.subscriber import Subscriber
from tests.ops.mqttparts import Requester

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from agent.localbroker import MosquittoBroker

pytestmark = [pytest.mark.broker, pytest.mark.pty]


async def _until(predicate: Callable[[], object], timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.05)


class Backend:
    """Asks the hub and watches its topics."""

    def __init__(self, broker: MosquittoBroker, prefix: str) -> None:
        self.prefix = prefix
        self.requester = Requester(broker.port, f"{prefix}/{HUB_ID}/response/#")
        self.watch = Subscriber(broker.host, broker.port, [f"{prefix}/{HUB_ID}/#"])

    async def ask(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        before = len(self.requester.snapshot())
        self.requester.send(f"{self.prefix}/{HUB_ID}/request/{name}", body)
        responses = await self.requester.wait_count(before + 1, timeout_s=30)
        return responses[before][1]

    def readings(self) -> int:
        return len(self.watch.messages(f"{HUB_ID}/readings"))

    def hub_states(self) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.watch.messages(f"{HUB_ID}/status")]

    def device_states(self) -> list[str]:
        topic = f"{HUB_ID}/devices/oxi/status"
        return [json.loads(m.payload)["state"] for m in self.watch.messages(topic)]

    def sessions(self) -> int:
        """How many sessions the hub's supervisor has started for the device (health)."""
        messages = self.watch.messages(f"{HUB_ID}/health")
        if not messages:
            return 0
        counters = json.loads(messages[-1].payload)["devices"]["oxi"]["counters"]
        return int(counters.get("sessions", 0))

    def request_counters(self) -> dict[str, int]:
        """The hub's request counters from its latest health document."""
        messages = self.watch.messages(f"{HUB_ID}/health")
        return dict(json.loads(messages[-1].payload)["requests"]) if messages else {}

    async def more_readings(self) -> None:
        """Readings keep arriving (the hub is alive and publishing)."""
        seen = self.readings()
        await _until(lambda: self.readings() > seen)

    def close(self) -> None:
        self.requester.client.loop_stop()
        self.requester.client.disconnect()
        self.watch.close()


async def test_reload_reconnect_rescan_and_flush_on_the_real_agent(
    tmp_path: Path, broker: MosquittoBroker, topic_prefix: str
) -> None:
    device = PtySerialDevice("nonin-df8", link=tmp_path / "nonin.tty", speed=5.0)
    device.plug()
    emulator = asyncio.create_task(device.run())
    devices = serial_device("oxi", "nonin-df8", device.port, 1.0)
    config = write_config(tmp_path, port=broker.port, prefix=topic_prefix, devices_yaml=devices)
    good_text = config.read_text(encoding="utf-8")
    backend = Backend(broker, topic_prefix)
    agent = AgentProcess(config=config, log_path=tmp_path / "agent.log")
    try:
        await agent.start()
        await _until(lambda: backend.readings() > 0)

        # A bad config is refused with its problems; the hub carries on as it was.
        bad = good_text.replace("interval_s: 2", "intervall_s: 2")
        answer = await backend.ask("reload-config", {"config": bad})
        assert answer["status"] == "error"
        assert "intervall_s" in answer["error"]
        await backend.more_readings()
        assert backend.hub_states()[-1]["state"] == "online"

        # A good one is applied: the session restarts, saying why, and readings go on.
        changed = good_text.replace("interval_s: 2", "interval_s: 3")
        answer = await backend.ask("reload-config", {"config": changed})
        assert answer["status"] == "ok"
        await _until(
            lambda: any(s.get("reason") == "reloading configuration" for s in backend.hub_states())
        )
        await _until(lambda: backend.hub_states()[-1]["state"] == "online")
        config_doc = await backend.ask("config", {})
        assert config_doc["status"] == "ok"
        assert config_doc["data"]["health"]["interval_s"] == 3
        await backend.more_readings()
        after_reload = json.loads(
            backend.watch.messages(f"{HUB_ID}/devices/oxi/status")[-1].payload
        )
        assert after_reload["last_reading_at"] is not None  # history kept over the reload

        await _reconnect_and_rescan(backend)

        # The outcomes are counted in health, across the reload, for the fleet to see.
        await backend.ask("no-such-request", {})
        await _until(lambda: backend.request_counters().get("unknown_request", 0) >= 1)
        counted = backend.request_counters()
        assert counted["received"] >= 6  # both reloads, config, reconnect, rescan, unknown
        assert counted["ok"] >= 4

        answer = await backend.ask("flush", {})
        assert answer["status"] == "ok"
        assert answer["data"]["rejected"] == 0
        assert answer["data"]["pending"] >= 0
        assert await agent.terminate() == 0
    finally:
        emulator.cancel()
        await agent.kill()
        backend.close()
        device.close()


async def _reconnect_and_rescan(backend: Backend) -> None:
    """Each restarts the device's session (counted in health), and readings resume."""
    # Reconnect one device: its session is closed and re-opened, readings resume.
    sessions = backend.sessions()
    answer = await backend.ask("reconnect-device", {"device": "oxi"})
    assert answer["status"] == "ok"
    await _until(lambda: backend.sessions() > sessions)
    await backend.more_readings()

    sessions = backend.sessions()
    answer = await backend.ask("rescan", {})
    assert answer["status"] == "ok"
    await _until(lambda: backend.sessions() > sessions)
    await backend.more_readings()
