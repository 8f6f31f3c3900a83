"""T18: hci0 disappears under the real agent; the ladder climbs, the hub stays up and online.

Everything is the real `wardlink run` process except BlueZ, which cannot run here: a fake
bluetoothd (python-dbusmock's ``bluez5`` template) on a private system bus, reached by
the agent's own production code (bleak for the BLE driver, dbus-fast for the ladder).
The test plays systemd twice: a fake NOTIFY_SOCKET that counts watchdog pings, and the
``wardlink-bluetooth-restart.path`` unit (it sees the request file, removes it and
"restarts bluetoothd", which brings hci0 back). The broker is a real Mosquitto and the
backend a real subscriber. Windows are configured short (seconds); nothing asserts on
wall speed, only on order and on what the backend saw.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import pytest

from tests.drivers.test_ble_bluez_adapter import BLUEZ_MOCK, _hci0, bluez, system_bus
from tests.e2e.harness import HUB_ID, AgentProcess, write_config
from tests.emulators.subscriber import Subscriber
from tests.lifecycle.test_sdnotify import FakeSystemd

if TYPE_CHECKING:
    from pathlib import Path

    from agent.localbroker import MosquittoBroker
    from tests.emulators.subscriber import Received

MOCK = "org.freedesktop.DBus.Mock"
__all__ = ["bluez", "system_bus"]  # fixtures, used by name
pytestmark = [pytest.mark.broker]

LADDER = (
    "bluetooth:\n  probe_interval_s: 1\n  power_cycle_after_s: 2\n"
    "  restart_bluetooth_after_s: 4\n  recovered_after_s: 3\n"
)
THERMOMETER = '  - id: thermo\n    driver: ble-thermometer\n    address: "C0:FF:EE:00:00:07"\n'


def _adapter_reports(messages: list[Received]) -> list[dict[str, Any]]:
    reports = []
    for message in messages:
        if message.topic.endswith("/health"):
            report = json.loads(message.payload).get("ble_adapter")
            if report is not None:
                reports.append(report)
    return reports


async def _until(condition: Any, timeout_s: float = 60.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.05)


async def test_vanished_hci0_is_recovered_by_the_ladder_without_restarting_the_agent(
    tmp_path: Path, broker: MosquittoBroker, topic_prefix: str, system_bus: str, bluez: Any
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    config = write_config(tmp_path, port=broker.port, prefix=topic_prefix, devices_yaml=THERMOMETER)
    config.write_text(config.read_text().replace("devices:\n", LADDER + "devices:\n"))
    systemd = FakeSystemd(tmp_path / "notify.sock")
    agent = AgentProcess(
        config=config,
        log_path=tmp_path / "agent.log",
        env={
            "NOTIFY_SOCKET": str(systemd.path),
            "WATCHDOG_USEC": "1000000",
            "DBUS_SYSTEM_BUS_ADDRESS": system_bus,
            "STATE_DIRECTORY": str(state),
        },
    )
    backend = Subscriber(broker.host, broker.port, [f"{topic_prefix}/{HUB_ID}/#"])
    request = state / "bluetooth-restart.request"
    try:
        await agent.start()
        await _until(lambda: any(r["state"] == "ok" for r in _adapter_reports(backend.messages())))

        bluez.obj.RemoveAdapter("hci0", dbus_interface=BLUEZ_MOCK)  # hci0 disappears
        pings_at_fault = len(systemd.pings())
        await _until(request.exists)
        # The privileged unit: remove the request, restart bluetoothd (hci0 comes back).
        request.unlink()
        bluez.obj.AddAdapter("hci0", "hub", dbus_interface=BLUEZ_MOCK)
        await _until(
            lambda: any(r["recoveries"] == 1 for r in _adapter_reports(backend.messages()))
        )
        pings_at_recovery = len(systemd.pings())
        # The thermometer's driver scans afresh on the adapter that came back.
        await _until(lambda: bool(_hci0().GetMethodCalls("StartDiscovery", dbus_interface=MOCK)))
        await _until(lambda: len(systemd.pings()) >= pings_at_recovery + 2)
        assert agent.process is not None
        assert agent.process.returncode is None  # never restarted, never exited
    finally:
        await agent.terminate()
        backend.close()
        systemd.close()

    reports = _adapter_reports(backend.messages())
    rungs = [r["rung"] for r in reports]
    climbed = [rung for i, rung in enumerate(rungs) if i == 0 or rung != rungs[i - 1]]
    assert climbed[:1] == [0]
    assert [r for r in climbed if r > 0] == [1, 2, 3]  # in order, none skipped, no reboot
    last = reports[-1]
    assert last["state"] == "ok"
    assert last["power_cycles"] == 1
    assert last["bluetooth_restarts_requested"] == 1
    assert last["last_error"] == "org.freedesktop.DBus.Error.UnknownObject"
    # An alert at every rung on the retained health topic, cleared afterwards.
    alarms = [
        alarm["detail"]
        for m in backend.messages("/health")
        for alarm in json.loads(m.payload)["alarms"]
        if alarm["name"] == "ble_adapter"
    ]
    for rung in ("rung 1 retrying", "rung 2 power_cycled", "rung 3 bluetooth_restart"):
        assert any(rung in detail for detail in alarms), rung
    assert not any(
        a["name"] == "ble_adapter"
        for a in json.loads(backend.messages("/health")[-1].payload)["alarms"]
    )
    # The hub was online on the broker throughout: one session, no offline in between.
    states = [json.loads(m.payload)["state"] for m in backend.messages(f"{HUB_ID}/status")]
    assert states[:-1] == ["online"] * (len(states) - 1)
    assert pings_at_recovery > pings_at_fault  # the watchdog kept pinging through it all
    log = agent.log_text()
    assert log.count("starting (pid") == 1
    assert "Bluetooth adapter hci0 failing" in log
    assert "recovered at rung 3" in log
