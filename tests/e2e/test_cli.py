"""The technician's commands against a real running agent: status, doctor, queue, check-config."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.localbroker import MosquittoBroker
from drivers.emulators.serial import PtySerialDevice
from tests.e2e.harness import HUB_ID, AgentProcess, serial_device, write_config
from tests.emulators.subscriber import Subscriber

pytestmark = [pytest.mark.broker, pytest.mark.pty]


def wardlink(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, check=False
    )


@pytest.fixture
async def running_agent(
    tmp_path: Path, broker: MosquittoBroker, topic_prefix: str
) -> AsyncIterator[AgentProcess]:
    device = PtySerialDevice("nonin-df8", link=tmp_path / "nonin.tty", speed=10.0)
    device.plug()
    emulator = asyncio.create_task(device.run())
    config = write_config(
        tmp_path,
        port=broker.port,
        prefix=topic_prefix,
        devices_yaml=serial_device("oxi", "nonin-df8", device.port),
    )
    sub = Subscriber(broker.host, broker.port, [f"{topic_prefix}/{HUB_ID}/health"])
    agent = AgentProcess(config=config, log_path=tmp_path / "agent.log")
    await agent.start()
    try:
        # The state file is written with the first health report.
        await asyncio.to_thread(sub.wait_for, lambda m: len(m) >= 1, 20.0)
        await asyncio.sleep(2.5)  # one more health interval: readings counted
        yield agent
    finally:
        await agent.terminate()
        sub.close()
        emulator.cancel()
        device.close()


async def test_status_doctor_and_queue_against_a_running_agent(
    running_agent: AgentProcess,
) -> None:
    config = str(running_agent.config)
    status = await asyncio.to_thread(wardlink, "status", "-c", config)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "oxi" in status.stdout
    assert "last publish: never" not in status.stdout  # readings have been PUBACKed
    assert "patient-e2e-0001" not in status.stdout  # no patient identifiers on screen

    doctor = await asyncio.to_thread(wardlink, "doctor", "-c", config, "--no-color")
    # An unsynced VM clock may fail; every broker step and the serial port must pass.
    assert "Traceback" not in doctor.stderr
    assert "\x1b[" not in doctor.stdout  # plain when piped
    for step in ("broker DNS", "broker TCP", "broker MQTT", "serial oxi"):
        assert re.search(rf"^\[ok  \] {step}", doctor.stdout, re.MULTILINE), doctor.stdout
    failed = re.findall(r"^\[FAIL\] (\S+)", doctor.stdout, re.MULTILINE)
    assert set(failed) <= {"clock"}, doctor.stdout
    assert doctor.returncode == (1 if failed else 0)  # 0 only when nothing failed

    listing = await asyncio.to_thread(wardlink, "queue", "list", "-c", config)
    assert listing.returncode == 0, listing.stderr

    export = await asyncio.to_thread(
        wardlink, "queue", "export", "-c", config, "--state", "sent", "--out", "-"
    )
    assert export.returncode == 0, export.stderr
    rows = [json.loads(line) for line in export.stdout.splitlines() if line.strip()]
    assert rows, "the running agent has sent readings to export"

    check = await asyncio.to_thread(wardlink, "check-config", config)
    assert check.returncode == 0
    assert check.stdout.startswith("OK:")


def test_bad_config_exits_78_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("hub:\n  id: x\n  colour: blue\n")
    for command in (
        ["check-config", str(bad)],
        ["run", "-c", str(bad)],
        ["decommission", "-c", str(bad)],
    ):
        result = wardlink(*command)
        assert result.returncode == 78
        assert "Traceback" not in result.stderr
        assert f"{bad}:3 hub.colour" in result.stderr
